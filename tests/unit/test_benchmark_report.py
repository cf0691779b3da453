"""docs/performance.md's generated sections: each benchmark rewrites its own, keeps the rest."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report

MAIL = "# Performance\n\nmail figures\n"


def block(text: str) -> str:
    return report.section("filtering", "benchmarks.filtering", f"## Filtering\n\n{text}\n")


def test_a_section_is_appended_then_replaced_in_place() -> None:
    first = report.replace_section(MAIL, "filtering", block("old figures"))
    assert first == MAIL + "\n" + block("old figures")
    second = report.replace_section(first + "tail\n", "filtering", block("new figures"))
    assert second == MAIL + "\n" + block("new figures") + "tail\n"
    assert "old figures" not in second


def test_sections_finds_marked_blocks_only() -> None:
    text = MAIL + block("x") + "<!-- begin other: y -->\nunterminated\n"
    assert report.sections(text) == {"filtering": block("x")}


def test_the_mail_benchmark_keeps_the_filtering_section() -> None:
    old = "# Performance\n\nold mail figures\n\n" + block("filtering figures")
    new = "# Performance\n\nnew mail figures\n"
    kept = report.keep_sections(new, old)
    assert kept == new + "\n" + block("filtering figures")
    assert report.keep_sections(new, "# Performance\n") == new


def test_update_section_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "performance.md"
    path.write_text(MAIL)
    report.update_section(path, "filtering", block("a"))
    report.update_section(path, "filtering", block("b"))
    assert path.read_text() == MAIL + "\n" + block("b")
