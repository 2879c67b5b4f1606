"""The user's upstream checkout: importing its modules, and whose missing module it is.

Why: ``--repo`` and ``anysr launch`` import the checkout's own modules (``models``,
``model``, ``test``), and those import whatever that repository needs (``tensorboardX``,
``cv2``, ...).  A ``ModuleNotFoundError`` raised there is the user's environment, not a
defect of ours, so it becomes a one-line :class:`MissingDependencyError` that names the
module, the file that imports it, and what to install.  Whose it is is read from the
traceback: the innermost frame that ran the ``import`` (import machinery skipped) and
whether any frame lies in the checkout.  A declared requirement of anysr_plugin missing
from our own imports is named as ours; any other module missing from our code is a
defect and stays an internal error.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import traceback
from pathlib import Path

from ..runtime.errors import AdapterError, MissingDependencyError

#: import name -> what ``pip install`` needs, for modules SR repositories commonly import
PIP_NAMES = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "PIL": "Pillow", "yaml": "pyyaml",
             "sklearn": "scikit-learn", "tensorboardX": "tensorboardX", "tensorboard": "tensorboard",
             "imageio": "imageio", "scipy": "scipy", "matplotlib": "matplotlib", "tqdm": "tqdm", "timm": "timm",
             "einops": "einops", "lpips": "lpips", "h5py": "h5py", "lmdb": "lmdb", "thop": "thop",
             "kornia": "kornia", "torchvision": "torchvision", "numpy": "numpy", "pandas": "pandas",
             "natsort": "natsort", "addict": "addict", "safetensors": "safetensors", "wandb": "wandb",
             "onnx": "onnx", "pytest": "pytest"}
#: modules anysr_plugin itself imports (its requirements and optional extras, pyproject.toml)
OWN_REQUIREMENTS = ("torch", "einops", "yaml", "tqdm", "PIL", "safetensors", "numpy", "lpips", "timm",
                    "matplotlib", "onnx", "skimage")
#: how to point at the API path where no tool applies (messages; README "Registry-style repositories")
API_PATH = ("convert the model in your own code where the repository builds it: model = anysr_plugin.anysrify(model) "
            "(README, 'Registry-style repositories')")


def _our_folders() -> tuple:
    """The folders of anysr_plugin's code: the package, and its adapters (a folder of their own,
    found without importing them: the glue never imports an adapter)."""
    package = __name__.split(".")[0]
    adapters = importlib.util.find_spec(f"{package}.adapters").submodule_search_locations
    return (Path(__file__).resolve().parents[1], *(Path(p).resolve() for p in adapters))


def _inside(path: Path, folders) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _importing_frames(exc: BaseException) -> list:
    """``(file, line)`` of each traceback frame, innermost last, without the import machinery."""
    frames = []
    for frame, line in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name.startswith("<frozen importlib") or Path(name).parent.name == "importlib":
            continue
        frames.append((Path(name).resolve() if not name.startswith("<") else Path(name), line))
    return frames


def _install_hint(name: str) -> str:
    top = name.split(".")[0]
    if top in PIP_NAMES:
        return f"pip install {PIP_NAMES[top]}"
    return "install it (the repository's README or requirements file names the package)"


def missing_dependency(exc: ModuleNotFoundError, roots=()) -> "MissingDependencyError | None":
    """The typed error for ``exc`` when the module is missing for the checkout under one of
    ``roots`` (a repository root, the script's folder) or is a requirement of ours; None
    when it is a defect of ours or of nobody we can name (then the caller re-raises)."""
    name = exc.name or str(exc)
    top = name.split(".")[0]
    roots = [Path(r).resolve() for r in roots if r is not None]
    frames = _importing_frames(exc)
    if not frames:
        return None
    importer, line = frames[-1]
    in_checkout = [f for f, _ in frames if _inside(f, roots)]
    if in_checkout:
        root = next(r for r in roots if _inside(in_checkout[-1], [r]))
        where = f"{importer} (line {line}) imports it"
        if importer != in_checkout[-1]:
            where += f", imported from {in_checkout[-1]}"
        if (root / top).is_dir() or (root / f"{top}.py").is_file():
            return MissingDependencyError(
                f"No module named {name!r}: {where}, but {root} has no such file: the checkout is incomplete or "
                "from another version of the repository; restore the file (git status) and run again",
                name=name, owner="repository")
        if top != name and importlib.util.find_spec(top) is not None:
            return MissingDependencyError(
                f"No module named {name!r}: {where}; the installed {top} has no {name}: {root} was written for "
                f"another version of {top} (its README or requirements file says which)", name=name,
                owner="repository")
        return MissingDependencyError(
            f"No module named {name!r}: {where}; it is a requirement of the repository {root}, not of "
            f"anysr_plugin: {_install_hint(name)}, then run again", name=name, owner="repository")
    if _inside(importer, _our_folders()) and top in OWN_REQUIREMENTS:
        return MissingDependencyError(
            f"No module named {name!r}: anysr_plugin needs it ({importer.name}, line {line}): "
            f"{_install_hint(name)}, then run again", name=name, owner="anysr_plugin")
    return None


@contextlib.contextmanager
def dependency_errors(*roots):
    """Turn a ``ModuleNotFoundError`` raised inside into :func:`missing_dependency`'s error
    (roots: the checkout, the script's folder); anything else passes unchanged."""
    try:
        yield
    except ModuleNotFoundError as exc:
        err = missing_dependency(exc, roots)
        if err is None:
            raise
        raise err from exc


def import_repo_module(repo, name: str, required: bool = True, method: str | None = None, script=None):
    """Import the checkout's own top-level module ``name`` (never a stdlib / PyPI namesake).

    ``repo`` must already be first on ``sys.path`` (``upstream.repo_imports`` or the
    launcher).  A module the checkout does not have is a one-line :class:`AdapterError`
    that says what was looked for, where, and the API path; a module the checkout's
    code imports but that is not installed is a :class:`MissingDependencyError`."""
    repo = Path(repo).resolve()
    if not ((repo / name / "__init__.py").is_file() or (repo / f"{name}.py").is_file()):
        if not required:
            return None
        raise AdapterError(not_found_message(repo, name, method, script))
    with dependency_errors(repo, Path(script).resolve().parent if script else None):
        module = importlib.import_module(name)
    where = Path(getattr(module, "__file__", "") or "").resolve()
    if repo not in where.parents:
        raise AdapterError(f"`import {name}` found {where}, not the one in {repo}; another package shadows it")
    return module


def not_found_message(repo: Path, name: str, method: str | None = None, script=None) -> str:
    """What was looked for and where, what the tool supports, and the way forward."""
    who = f"anysr launch {method}" if method else "--repo"
    kind = ("a LIIF-style model registry (a `models` package with make(spec))" if name == "models"
            else f"the repository's own `{name}` package")
    looked = f"{who} needs {kind}; looked for {name}/__init__.py and {name}.py in {repo} (--repo, default: " \
             "the current folder)"
    if script is not None and Path(script).resolve().parent != repo:
        folder = Path(script).resolve().parent
        if (folder / name / "__init__.py").is_file() or (folder / f"{name}.py").is_file():
            return f"{looked}: none there, but the script's folder has one: pass --repo {folder}"
        looked += f" and in the script's folder {folder}"
    return (f"{looked}: none. Run from the upstream repository root or pass --repo DIR; a repository that builds "
            f"its model another way (its own registry, Python-file configs): {API_PATH}")


def registry_make(models, repo, method: str | None = None):
    """The checkout's ``models.make``; a ``models`` package without one is another kind of registry."""
    make = getattr(models, "make", None)
    if not callable(make):
        who = f"anysr launch {method}" if method else "--repo"
        raise AdapterError(f"{Path(models.__file__).resolve()} defines no make(spec): {who} builds models through "
                           f"a LIIF-style registry (`models.make({{'name', 'args'}})`), which {repo} does not have; "
                           f"{API_PATH}")
    return make




def checkout_root(repo=None, config=None) -> "Path | None":
    """The checkout a config belongs to: ``--repo``, else the nearest folder above the config
    with a ``models`` package (``configs/train-div2k/x.yaml`` in a LIIF checkout), else the
    current folder when it has one; None when none is found."""
    if repo is not None:
        return Path(repo).resolve()
    here = Path.cwd().resolve()
    starts = list(Path(config).resolve().parents) if config is not None else []
    for folder in starts + [here]:
        if (folder / "models" / "__init__.py").is_file() or (folder / "models.py").is_file():
            return folder
    return None


def training_script(root, preferred: str) -> tuple:
    """``(script, found)``: the checkout's training script -- ``preferred`` (the method's usual
    name) when it exists there, else the only ``train*.py`` at its root, else None -- and every
    ``train*.py`` found there."""
    found = sorted(p.name for p in Path(root).glob("train*.py") if p.is_file()) if root is not None else []
    if preferred in found:
        return preferred, found
    return (found[0] if len(found) == 1 else None), found


__all__ = ["missing_dependency", "dependency_errors", "import_repo_module", "registry_make", "not_found_message",
           "checkout_root", "training_script", "PIP_NAMES", "API_PATH"]
