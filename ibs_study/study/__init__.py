"""The reproduction study: everything that knows the presets, seeds, tables and the paper.

It builds on the library (``ibs_study.{data, sampling, models, metrics, engine, viz}``), which
never imports it.
"""
