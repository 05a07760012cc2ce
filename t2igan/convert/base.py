"""The converter framework: official checkpoints -> a t2igan model folder, checked before writing.

In the spirit of stylegan2-ada's ``legacy.py``: every converter declares a :class:`KeyTable`
(source-key pattern -> target key + transform, plus the source keys it ignores on purpose), and
:meth:`KeyTable.apply` refuses a conversion unless every target parameter and buffer is filled
exactly once with the target's shape, and every source key is used or listed as ignored. A file
of another family therefore fails with one line naming the file and the keys that do not fit.

Reading never runs code from a file: ``.pth`` files go through ``torch.load(weights_only=True)``
(:func:`load_torch`), pickles (``captions.pickle``) through the project's restricted unpickler
(:func:`t2igan.data.safe_pickle.load_pickle`). Wrappers are detected and reported
(:func:`unwrap`): ``{'state_dict': ...}``, DF-GAN's ``{'model': {'netG': ...}}``, DataParallel's
``module.`` prefixes.

A family's converter (one module, e.g. :mod:`t2igan.convert.dfgan`) is a :class:`Converter`:
its ``build(sources, options) -> Converted`` reads and checks everything in memory and fills a
:class:`Report`; :func:`write_converted` then writes the folder to ``OUT.tmp``, loads it back the
way ``t2igan sample`` does (``Pipeline.from_pretrained``) and only then moves it to ``OUT``
(:func:`t2igan.core.fs.replace_dir`). ``--check`` prints the report and writes nothing.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from t2igan import T2IError
from t2igan.core import weights as ckpt
from t2igan.core.folder import write_model_index

Tensor = torch.Tensor
StateDict = dict[str, Tensor]


# ----------------------------------------------------------------------------- reading files
def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure is one T2IError line naming
    the file: missing, truncated/corrupt, or a pickle that would import or call code."""
    p = Path(path)
    if not p.is_file():
        raise T2IError(f"checkpoint not found: {p}")
    if p.stat().st_size == 0:
        raise T2IError(f"{p}: empty file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg or "GLOBAL" in msg or "unrecognized function" in msg:  # a class or callable
            m = re.search(r"(?:GLOBAL|global:?) ([\w.]+)", msg)
            what = f" (it references {m.group(1)})" if m else ""
            raise T2IError(f"refusing to load {p}: it is a pickle that would run code{what}; only tensors, "
                           "numbers, strings, lists and dicts are read") from None
        first = msg.splitlines()[0][:80] if msg else "UnpicklingError"
        raise T2IError(f"{p}: not a readable PyTorch checkpoint (truncated or corrupt: {first})") from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        first = f"{e.__class__.__name__}: {str(e).splitlines()[0][:100]}" if str(e) else e.__class__.__name__
        raise T2IError(f"{p}: not a readable PyTorch checkpoint (truncated or corrupt: {first})") from None


def load_data_pickle(path: str | os.PathLike) -> Any:
    """A data pickle (``captions.pickle``) through the restricted unpickler (no code runs)."""
    from t2igan.data.safe_pickle import load_pickle

    return load_pickle(path)


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor)
                                                              for k, v in obj.items())


def unwrap(obj: Any, path: str | os.PathLike, prefer: Sequence[str] = ()) -> tuple[StateDict, list[str], list[str]]:
    """The state dict inside what ``torch.load`` returned, with the wrappers met on the way.

    Descends through ``{'state_dict': ...}``, ``{'model': ...}`` and, in a dict of state dicts
    (DF-GAN's ``{'netG': ..., 'netD': ..., 'netC': ...}``), the first name of ``prefer`` present;
    strips a ``module.`` prefix that every key carries (DataParallel / DDP). Returns (state dict,
    wrappers: one human-readable line each, ignored: what was left beside the chosen state dict)."""
    p = Path(path)
    wrappers: list[str] = []
    ignored: list[str] = []
    trail = ""
    for _ in range(4):
        if is_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise T2IError(f"{p}: not a state dict (found a {type(obj).__name__}{' at ' + trail if trail else ''})")
        keys = [k for k in obj if isinstance(k, str)]
        pick = next((k for k in (*prefer, "state_dict", "model", "state") if k in obj and isinstance(obj[k], Mapping)), None)
        if pick is None:
            shown = ", ".join(map(repr, keys[:6])) + (" ..." if len(keys) > 6 else "")
            raise T2IError(f"{p}: no state dict found{' in ' + trail if trail else ''} (keys: {shown})")
        trail = f"{trail}[{pick!r}]"
        ignored += [f"{trail.rpartition('[')[0]}[{k!r}]" for k in keys if k != pick]
        obj = obj[pick]
    else:
        raise T2IError(f"{p}: no state dict found (nested too deep at {trail})")
    if trail:
        wrappers.append(f"nested dict: the state dict is checkpoint{trail}")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        wrappers.append("DataParallel: 'module.' prefix stripped from every key")
    elif any(k.startswith("module.") for k in state):
        bad = next(k for k in state if k.startswith("module."))
        raise T2IError(f"{p}: some keys carry a DataParallel 'module.' prefix and others do not (e.g. {bad!r})")
    return state, wrappers, ignored


# ----------------------------------------------------------------------------- key tables
@dataclass(frozen=True)
class Rule:
    """Source keys matching ``pattern`` (a regex, full match) go to ``target`` (a template with
    ``\\1`` / ``\\g<name>`` groups), through ``transform`` (None: as is)."""

    pattern: str
    target: str
    transform: Callable[[Tensor], Tensor] | None = None


IDENTITY = Rule(r"(.+)", r"\1")  # the ported networks keep the official names


@dataclass
class KeyTable:
    """A declared mapping from a source state dict onto a target module's state dict.

    ``rules``: tried in order, first match wins. ``ignore``: source keys dropped on purpose (regex,
    full match; e.g. ``num_batches_tracked`` of a newer torch). ``optional``: target keys a source
    may lack (kept at the module's initial value and reported; e.g. ``.*num_batches_tracked`` that
    torch < 0.4 did not save)."""

    rules: Sequence[Rule] = (IDENTITY,)
    ignore: Sequence[str] = ()
    optional: Sequence[str] = (r".*\.num_batches_tracked",)

    def apply(self, state: Mapping[str, Tensor], module: nn.Module, source: str, what: str,
              report: "Report | None" = None) -> StateDict:
        """Map ``state`` onto ``module`` and load it (strict); ``what`` names the expected content
        ("a DF-GAN generator") in errors. Returns the mapped state dict."""
        own = module.state_dict()
        out: StateDict = {}
        origin: dict[str, str] = {}
        unknown, ignored = [], []
        rules = [(re.compile(r.pattern), r) for r in self.rules]
        ignores = [re.compile(p) for p in self.ignore]
        for k, v in state.items():
            if any(p.fullmatch(k) for p in ignores):
                ignored.append(k)
                continue
            for rx, rule in rules:
                m = rx.fullmatch(k)
                if m is None:
                    continue
                t = m.expand(rule.target)
                if t not in own:
                    continue  # an identity-like rule onto a key the target lacks: try the next rule
                if t in out:
                    raise T2IError(f"{source}: {origin[t]!r} and {k!r} both map to {t!r}")
                out[t] = rule.transform(v) if rule.transform is not None else v
                origin[t] = k
                break
            else:
                unknown.append(k)
        optional = [re.compile(p) for p in self.optional]
        missing = [t for t in own if t not in out and not any(p.fullmatch(t) for p in optional)]
        if unknown or missing:
            parts = []
            if unknown:
                eg = ", ".join(map(repr, unknown[:3]))
                parts.append(f"{len(unknown)} of its {len(state)} keys fit nothing (e.g. {eg})")
            if missing:
                eg = ", ".join(map(repr, missing[:3]))
                parts.append(f"{len(missing)} of the {len(own)} weights are missing (e.g. {eg})")
            raise T2IError(f"{source}: not {what}: {'; '.join(parts)}")
        filled_default = [t for t in own if t not in out]
        for t, v in out.items():
            ref = own[t]
            if tuple(v.shape) != tuple(ref.shape):
                raise T2IError(f"{source}: {origin[t]!r} has shape {tuple(v.shape)}, {what} of this configuration "
                               f"expects {tuple(ref.shape)} for {t!r}")
            if v.is_floating_point() != ref.is_floating_point():
                raise T2IError(f"{source}: {origin[t]!r} is {str(v.dtype).removeprefix('torch.')}, "
                               f"expected {str(ref.dtype).removeprefix('torch.')}")
        cast = [t for t, v in out.items() if v.dtype != own[t].dtype]
        out = {t: v.to(own[t].dtype).contiguous().clone() for t, v in out.items()}
        for t in filled_default:
            out[t] = own[t].clone()
        ckpt.load_state_strict(module, out, source)
        if report is not None:
            report.used[source] = report.used.get(source, 0) + len(origin)
            report.ignored += [f"{source}: {k}" for k in ignored]
            if filled_default:
                report.notes.append(f"{source}: {len(filled_default)} buffers not in the file kept at their initial "
                                    f"value ({', '.join(filled_default[:2])}{' ...' if len(filled_default) > 2 else ''})")
            if cast:
                report.notes.append(f"{source}: {len(cast)} tensors cast to the model's dtype "
                                    f"({state[origin[cast[0]]].dtype} -> {own[cast[0]].dtype})")
        return out


def shape_of(state: Mapping[str, Tensor], key: str, source: str, what: str, ndim: int | None = None) -> tuple[int, ...]:
    """The shape of ``state[key]`` (for guessing a configuration), or one line saying the file is not ``what``."""
    v = state.get(key)
    if v is None:
        raise T2IError(f"{source}: not {what} (no '{key}')")
    if ndim is not None and v.dim() != ndim:
        raise T2IError(f"{source}: '{key}' has shape {tuple(v.shape)}, {what} has a {ndim}-d tensor there")
    return tuple(v.shape)


def count_prefixed(state: Iterable[str], pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over the keys (e.g. the
    number of ``h_net(\\d+)`` stages)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


# ----------------------------------------------------------------------------- report
@dataclass
class Report:
    """What a conversion found; printed by ``--check`` and before writing."""

    family: str  # converter name ("dfgan")
    title: str  # "DF-GAN"
    files: dict[str, str] = field(default_factory=dict)  # path -> what it was recognised as
    wrappers: list[str] = field(default_factory=list)  # "path: nested dict ...", "path: DataParallel ..."
    config: dict[str, Any] = field(default_factory=dict)  # constructor arguments guessed from shapes
    vocab_size: int | None = None
    used: dict[str, int] = field(default_factory=dict)  # path -> number of source keys used
    ignored: list[str] = field(default_factory=list)  # "path: key" dropped on purpose
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"family: {self.title} ({self.family})"]
        for p, what in self.files.items():
            n = self.used.get(p)
            out.append(f"file: {p}: {what}" + (f", {n} tensors used" if n else ""))
        out += [f"wrapper: {w}" for w in self.wrappers]
        if self.config:
            out.append("config (from shapes): " + ", ".join(f"{k}={v}" for k, v in self.config.items()))
        if self.vocab_size is not None:
            out.append(f"vocabulary: {self.vocab_size} words (index 0 '<end>')")
        if self.ignored:
            shown = ", ".join(self.ignored[:6])
            out.append(f"ignored ({len(self.ignored)}): {shown}{' ...' if len(self.ignored) > 6 else ''}")
        out += [f"note: {n}" for n in self.notes]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def unwrap(self, src: Source, prefer: Sequence[str] = ()) -> StateDict:
        """The state dict inside ``src`` (:func:`unwrap`); the wrappers it went through and the keys it
        left beside the state dict are recorded here."""
        state, wrappers, left = unwrap(src.obj, src.path, prefer)
        self.wrappers += [f"{src.name}: {w}" for w in wrappers]
        self.ignored += [f"{src.name}: {k}" for k in left]
        return state


# ----------------------------------------------------------------------------- sources
@dataclass
class Source:
    """One input file, read once: ``obj`` is what ``torch.load`` / the restricted unpickler gave."""

    path: Path
    obj: Any
    kind: str  # "torch" | "pickle" | "raw" (RAW_SUFFIXES, TF ".data-*": obj None, the converter reads the path)

    @property
    def name(self) -> str:
        return str(self.path)


RAW_SUFFIXES = (".t7", ".ckpt", ".index", ".meta")  # not torch.load-able: kind "raw", obj None
TF_STEP_CKPT = re.compile(r"\.ckpt-\d+$")  # a TensorFlow V1 checkpoint saved with its step: model.ckpt-5000


def read_sources(paths: Sequence[str | os.PathLike]) -> list[Source]:
    """Read every file (``.pickle``/``.pkl``: data pickle; :data:`RAW_SUFFIXES` and TensorFlow
    ``.data-*``: left to the converter; anything else: a torch checkpoint)."""
    out = []
    seen = set()
    for p in map(Path, paths):
        if p.resolve() in seen:
            raise T2IError(f"{p}: given twice")
        seen.add(p.resolve())
        if p.suffix.lower() in RAW_SUFFIXES or ".data-" in p.name or TF_STEP_CKPT.search(p.name):
            if not p.exists():
                raise T2IError(f"file not found: {p}")
            out.append(Source(p, None, "raw"))  # read by the converter itself (Torch7, TensorFlow)
        elif p.suffix.lower() in (".pickle", ".pkl"):
            out.append(Source(p, load_data_pickle(p), "pickle"))
        else:
            out.append(Source(p, load_torch(p), "torch"))
    return out


def assign(sources: Sequence[Source], roles: Mapping[str, Callable[[Source], bool]], required: Sequence[str],
           title: str, usage: str) -> dict[str, Source]:
    """Give every source the first role whose test accepts it (role -> source). A file no role
    takes, a role taken twice or a required role left empty is one line naming the file/role."""
    got: dict[str, Source] = {}
    for s in sources:
        role = next((r for r, test in roles.items() if r not in got and _safe_test(test, s)), None)
        if role is None:
            dup = next((r for r, test in roles.items() if r in got and _safe_test(test, s)), None)
            if dup:
                raise T2IError(f"{s.path}: a second {dup} file (the first was {got[dup].path})")
            raise T2IError(f"{s.path}: not one of the files a {title} conversion takes ({usage})")
        got[role] = s
    for r in required:
        if r not in got:
            raise T2IError(f"{title}: no {r} file among the sources ({usage})")
    return got


def _safe_test(test, s: Source) -> bool:
    try:
        return bool(test(s))
    except T2IError:
        return False


def state_keys(s: Source, prefer: Sequence[str] = ()) -> set[str]:
    """The keys of the state dict in ``s`` (after unwrapping), or an empty set when it holds none."""
    if s.kind != "torch":
        return set()
    try:
        return set(unwrap(s.obj, s.path, prefer)[0])
    except T2IError:
        return set()


# ----------------------------------------------------------------------------- output
@dataclass
class Component:
    """A sub-folder of the output: ``module`` saved as ``subdir/`` with ``kind`` and ``config``."""

    subdir: str
    module: nn.Module
    kind: str
    config: dict


@dataclass
class Converted:
    """Everything a conversion writes, built and checked in memory.

    ``text_encoder``: a CaptionEncoder written with :func:`t2igan.text.spec.save_encoder_dir`;
    ``generator``: written as ``generator/`` (kind ``<model_family>_generator``, its ``config``);
    ``components``: further sub-folders (``image_encoder/`` ...); ``index``: extra
    ``model_index.json`` entries (``image_size`` ...); ``extra``: a callback writing more files
    into the temporary folder."""

    report: Report
    model_family: str
    text_encoder: Any = None
    generator: nn.Module | None = None
    components: list[Component] = field(default_factory=list)
    index: dict = field(default_factory=dict)
    extra: Callable[[Path], None] | None = None


def write_converted(conv: Converted, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``conv`` as a model folder at ``out`` (via ``out.tmp``, checked by loading it back)."""
    from t2igan.families.base import generator_kind
    from t2igan.text.spec import save_encoder_dir

    final = Path(out)
    if final.exists() and not final.is_dir():
        raise T2IError(f"--out {final}: exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise T2IError(f"--out {final}: folder exists and is not empty (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.fresh_tmp(final)
    try:
        if conv.text_encoder is not None:
            save_encoder_dir(tmp, conv.text_encoder)
        if conv.generator is not None:
            g = conv.generator
            ckpt.save_component(g, tmp / "generator", generator_kind(conv.model_family), dict(g.config))
        for c in conv.components:
            ckpt.save_component(c.module, tmp / c.subdir, c.kind, c.config)
        if conv.extra is not None:
            conv.extra(tmp)
        write_model_index(tmp, family=conv.model_family, converted_from=conv.report.family,
                          sources=[str(p) for p in conv.report.files], **conv.index)
        if conv.generator is not None:
            from t2igan.pipeline import Pipeline

            Pipeline.from_pretrained(tmp)  # the folder loads the way `t2igan sample` loads it
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ckpt.replace_dir(tmp, final)
    return final


def take_options(options: dict, spec: Mapping[str, tuple[Callable[[Any], Any], Any, str]], title: str) -> dict:
    """Parse converter options (``--set KEY=VALUE`` strings or Python values) against ``spec``:
    key -> (parser, default, one-line meaning). An unknown key or unparsable value is one line."""
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise T2IError(f"{title}: unknown option {unknown[0]!r}; options: "
                       + ", ".join(f"{k} ({v[2]}, default {v[1]!r})" for k, v in spec.items()))
    out = {}
    for k, (parse, default, _meaning) in spec.items():
        if k not in options:
            out[k] = default
            continue
        try:
            out[k] = parse(options[k])
        except (TypeError, ValueError) as e:
            raise T2IError(f"{title}: option {k}={options[k]!r}: {e}") from None
    return out


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v):
        if str(v) not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return str(v)
    return parse


def positive_int(v) -> int:
    if isinstance(v, bool) or int(v) != float(v) or int(v) < 1:
        raise ValueError("expected a whole number >= 1")
    return int(v)


@dataclass(frozen=True)
class Converter:
    """One family's converter: ``build(sources, options) -> Converted`` (reads and checks, writes
    nothing). ``usage``: the files it takes, for help and errors. ``options``: extra CLI options,
    ``(flag, kwargs for argparse add_argument)``; their values reach ``build`` as ``options``."""

    name: str
    title: str
    usage: str
    build: Callable[[list[Source], dict], Converted]
    options: tuple[tuple[str, dict], ...] = ()
    help: str = ""
    use: str = 'use it as any model folder: t2igan sample {out} "a caption"'  # printed after writing


def run_converter(conv: Converter, sources: Sequence[str | os.PathLike], out: str | os.PathLike | None,
                  check: bool = False, overwrite: bool = False, echo: Callable[[str], None] | None = print,
                  **options) -> Report:
    """Read, check, report (``echo`` every line), then write unless ``check``."""
    if not sources:
        raise T2IError(f"{conv.title}: no source files given ({conv.usage})")
    if out is None and not check:
        raise T2IError("--out is required (or --check to only inspect the files)")
    result = conv.build(read_sources(sources), dict(options))
    if echo is not None:
        for line in result.report.lines():
            echo(line)
    if not check:
        write_converted(result, out, overwrite=overwrite)
    return result.report
