"""`ibs-study --help` and every command's `--help` print and exit 0."""

from __future__ import annotations

import pytest

from ibs_study.cli import COMMANDS, main


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command_with_its_text(capsys):
    text = " ".join(_help(["--help"], capsys).split())  # argparse wraps the lines
    for name, (help_text, _, _) in COMMANDS.items():
        assert name in text
        assert " ".join(help_text.split()) in text, name
    assert "95 % interval" in text  # a literal percent sign survives argparse's formatting


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_help_page_that_describes_it(command, capsys):
    page = " ".join(_help([command, "--help"], capsys).split())
    assert page.startswith(f"usage: ibs-study {command} ")
    assert " ".join(COMMANDS[command][0].split()) in page
