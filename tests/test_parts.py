"""State dicts split into bounded safetensors parts round-trip, and a missing part is an error."""
import pytest
import torch

from e4e.checkpoints.parts import load_parts, save_parts
from e4e.errors import E4EError


def test_parts_round_trip_and_size_bound(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {f"w{i}": torch.randn(64, 64, generator=g) for i in range(6)}
    state["step"] = torch.tensor(7)
    paths = save_parts(state, tmp_path / "g", max_bytes=40_000)
    assert len(paths) == 3 and all(p.stat().st_size < 40_000 + 2_000 for p in paths)
    back = load_parts(tmp_path / "g")
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    half = load_parts(save_parts(state, tmp_path / "h", dtype=torch.float16)[0].with_name("h"))
    assert half["w0"].dtype == torch.float16 and half["step"].dtype == torch.int64
    paths[1].unlink()
    with pytest.raises(E4EError, match="part 1 of 3"):
        load_parts(tmp_path / "g")
