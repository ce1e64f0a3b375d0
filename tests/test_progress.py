"""tinygpt/progress.py: the progress display of every long command."""
import pytest

from tinygpt.progress import Progress


def test_progress_line_fits_an_80_column_terminal():
    bar = Progress(20_000, desc="train", unit="tok", scale=768)
    bar.done = 12_345
    bar._samples = [(0.0, 12_000), (1.0, 12_345)]            # 345 it/s = 264,960 tok/s
    line = bar.line({"loss": "1.9821", "lr": "4.2e-04"}, width=79)
    assert len(line) <= 79 and "264,960 tok/s" in line and "ETA 0:22" in line


def test_progress_rate_is_current_not_average():
    bar = Progress(1000, window=5.0)
    bar._samples = [(0.0, 0)]
    for t, done in [(10.0, 100), (20.0, 200), (21.0, 400), (22.0, 600)]:   # it sped up
        bar._samples.append((t, done))
        while len(bar._samples) > 2 and t - bar._samples[0][0] > bar.window:
            bar._samples.pop(0)
    assert bar.count_rate() == pytest.approx(200.0)         # not 600 / 22


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    import io
    stream = io.StringIO()
    bar = Progress(3, desc="x", stream=stream, every=0.0)
    for i in (1, 2, 3):
        bar.update(i)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue() and lines[-1].startswith("x [")


def test_progress_show_redraws_without_moving(capsys):
    """show() puts a status on the bar (an evaluation's batches) without changing the count or
    the rate; it is throttled like update()."""
    import io
    from tinygpt.progress import Progress
    stream = io.StringIO()
    bar = Progress(100, desc="train", stream=stream, every=0.0)
    bar.update(10)
    bar.show(evaluating="3/40 batches")
    assert bar.done == 10
    assert "10/100  evaluating 3/40 batches" in stream.getvalue().splitlines()[-1]
