"""Unified panoptic models; build one with :func:`ibs_study.models.build.build_model`."""
