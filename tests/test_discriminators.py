import pytest
import torch
from torch import nn

from conftest import discover, load_npz, rel_err, require_fixtures, state_dict_from_manifest
from e4e.nets.discriminators import LatentCodesDiscriminator

TOL = 1e-4
WDISC = [pytest.param(p, id=p.name.split(".")[0]) for p in discover("wdisc*.manifest.json")] or [None]


@pytest.mark.parametrize("manifest_path", WDISC)
def test_latent_discriminator_matches_official(manifest_path):
    require_fixtures()
    if manifest_path is None:
        pytest.fail("no wdisc*.manifest.json in the fixture folder")
    state = state_dict_from_manifest(manifest_path)
    style_dim = state["mlp.0.weight"].shape[1]
    n_mlp = sum(1 for k in state if k.endswith(".weight"))
    model = LatentCodesDiscriminator(style_dim, n_mlp)
    model.load_state_dict(state, strict=True)
    data = load_npz(manifest_path.parent / (manifest_path.name.split(".")[0] + ".npz"))
    with torch.no_grad():
        logits = model.eval()(data["w"])
    assert logits.shape == data["logits"].shape
    err = rel_err(logits, data["logits"])
    print(manifest_path.name, err)
    assert err <= TOL


def test_latent_discriminator_layout():
    model = LatentCodesDiscriminator()
    assert list(model.state_dict()) == [f"mlp.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
    acts = [m for m in model.mlp if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
    assert model(torch.randn(5, 512)).shape == (5, 1)
