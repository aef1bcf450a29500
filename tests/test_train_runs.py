"""e4e.train.runs: telling an existing run folder, and trimming its log back to a resume's step."""
import json

from e4e.train.runs import existing_run, truncate_log


def test_existing_run(tmp_path):
    assert existing_run(tmp_path) is None
    (tmp_path / "log.jsonl").write_text("")
    assert existing_run(tmp_path) is None  # an empty log is no run
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n')
    assert existing_run(tmp_path) == "log.jsonl (no checkpoint yet)"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert existing_run(tmp_path) == "checkpoints/last.pt"
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    assert existing_run(tmp_path, checkpoints=("checkpoint.pt",)) == "checkpoint.pt"


def test_truncate_log_keeps_rows_up_to_the_step(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"step": 1, "loss": 1.0}, {"val": {"loss": 2.0}, "step": 2}, {"step": 2}, {"step": 3}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')  # torn by a kill
    truncate_log(log, 2)
    assert [json.loads(line) for line in log.read_text().splitlines()] == rows[:3]
    before = log.stat().st_mtime_ns
    truncate_log(log, 2)  # nothing to drop: the file is left alone
    assert log.stat().st_mtime_ns == before
    truncate_log(tmp_path / "missing.jsonl", 0)
    assert not (tmp_path / "missing.jsonl").exists()
