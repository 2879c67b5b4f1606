"""Forks whose encoder no adapter knows by name, through the API, convert-config and the
launcher: an RRDB encoder (ESRGAN's block, a shipped block type) and an encoder built from
the user's own block type, registered by a module the user names with ``--import``.
Without that registration the encoder has nothing convertible: a typed error, never a
plain model trained in silence."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin.cli import main as cli_main
from anysr_plugin.errors import NoBlocksError

import lookalike_fork_repo as F
import lookalike_rrdb
import test_user_block_type as U
from test_structure import launch, repo_models

ENCODERS = {  # variant -> (registered encoder spec, its block class, blocks converted)
    "rrdb": ({"name": "rrdbnet", "args": {"nf": 16, "nb": 2, "gc": 8}}, "RRDB", 2),
    "user": ({"name": "bottleneck-encoder", "args": {"c": 16, "n": 3}}, "Bottleneck", 3),
}

BOTTLENECK_ENCODER = '''

class BottleneckEncoder(nn.Module):
    def __init__(self, c=16, n=3):
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*[Bottleneck(c) for _ in range(n)])
        self.out_dim = c

    def forward(self, x):
        h = self.head(x)
        return h + self.blocks(h)
'''

#: the user's module that registers their block type (named with --import)
USER_MODULE = "import anysr_plugin\nfrom test_user_block_type import SlimBottleneck\n\n" \
              "anysr_plugin.register_block_type(SlimBottleneck)\n"


def write_repo(root: Path, variant: str) -> Path:
    """The `fork` look-alike (renamed model, gen_feats) with one more encoder in its registry."""
    F.write_fork_repo(root, "fork")
    if variant == "rrdb":
        text = Path(lookalike_rrdb.__file__).read_text() + "\n\nfrom models import register\n" \
            "register('rrdbnet')(RRDBNet)\n"
    else:
        text = "import torch\nimport torch.nn as nn\n\nfrom models import register\n\n\n" + inspect.getsource(U.Bottleneck) \
            + BOTTLENECK_ENCODER + "\n\nregister('bottleneck-encoder')(BottleneckEncoder)\n"
        (root / "my_blocks.py").write_text(USER_MODULE)
    (root / "models" / "fork_encoder.py").write_text(text)
    init = root / "models" / "__init__.py"
    init.write_text(init.read_text() + "from . import fork_encoder\n")
    cfg = F.train_config("fork")
    cfg["model"]["args"]["encoder_spec"] = ENCODERS[variant][0]
    (root / "vanilla.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.fixture(params=list(ENCODERS))
def repo(request, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield request.param, write_repo(tmp_path / request.param, request.param)
    if U.SlimBottleneck in anysr.block_types():  # what --import registered in this process
        anysr.unregister_block_type(U.SlimBottleneck)


def test_api(repo):
    variant, root = repo
    spec = yaml.safe_load((root / "vanilla.yaml").read_text())["model"]
    if variant == "user":
        with repo_models(root) as models, pytest.raises(NoBlocksError):
            anysr.anysrify(models.make(spec))
        anysr.register_block_type(U.SlimBottleneck)
    with repo_models(root) as models:
        model = models.make(spec).eval()
    report = anysr.inspect_targets(anysrify_checked(model))
    _, cls, n = ENCODERS[variant]
    assert [t.upstream_type for t in report.targets] == [cls] * n
    assert report.scale_source == "scale from forward argument `cell`"


def anysrify_checked(model):
    """Converted at full width, the model computes what it computed before."""
    g = torch.Generator().manual_seed(0)
    inp = torch.rand(1, 3, 6, 6, generator=g)
    coord = torch.rand(1, 20, 2, generator=g) * 2 - 1
    cell = torch.full((1, 20, 2), 2 / 12)
    with torch.no_grad():
        before = model(inp, coord, cell)
        anysr.anysrify(model)
        with anysr.use_width(model, 1.0):
            after = model(inp, coord, cell)
    assert torch.allclose(before, after, atol=1e-6)
    return model


def test_convert_config(repo, tmp_path, capsys):
    variant, root = repo
    argv = ["convert-config", "--method", "liif", str(root / "vanilla.yaml"), "-o", str(tmp_path / "a.yaml"),
            "--repo", str(root)]
    if variant == "user":
        assert cli_main(argv) == 2  # the block type is not registered in this process
        err = capsys.readouterr().err
        assert "holds no convertible block" in err and len(err.strip().splitlines()) == 1
        argv += ["--import", str(root / "my_blocks.py")]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    _, cls, n = ENCODERS[variant]
    assert f"would convert {n} block(s) ({n} {cls})" in out and "scale from forward argument `cell`" in out
    assert "anysr" in yaml.safe_load((tmp_path / "a.yaml").read_text())["model"]


def test_launcher(repo):
    variant, root = repo
    cfg = anysr.AnySRConfig(seed=0)
    if variant == "user":
        with pytest.raises(NoBlocksError, match="stopped before any training step"):
            launch(root, "train_liif.py", "--config", "vanilla.yaml", "--name", "a", anysr_config=cfg)
        assert not (root / "save" / "a" / "epoch-last.pth").exists()
    imports = [str(root / "my_blocks.py")] if variant == "user" else []
    rc, out, err = launch(root, "train_liif.py", "--config", "vanilla.yaml", "--name", "a", anysr_config=cfg,
                          imports=imports)
    assert rc == 0, out + err
    _, cls, n = ENCODERS[variant]
    assert f"built myiif (ImplicitFork): converted {n} block(s) ({n} {cls})" in err
    sd = torch.load(root / "save/a/epoch-last.pth", map_location="cpu", weights_only=True)["model"]["sd"]
    assert sum(k.endswith("anysr_gate.fc1.weight") for k in sd) == n
