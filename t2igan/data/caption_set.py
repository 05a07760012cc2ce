"""Caption sets: a JSONL of captions with the attribute labels they describe, for evaluation.

One record per line::

    {"caption": "a bloom whose florets are scarlet",
     "attributes": {"petal_colour": "red", "size": "small", ...},
     "named": ["petal_colour"],            optional: the attributes the caption states
                                           (default: every key of "attributes")
     "id": "00000012"}                     optional: the dataset image the caption describes
                                           (gives the real-image ceiling)

``attributes`` holds the true value of (at least) every named attribute; attribute accuracy
scores the generated image on the named ones. ``t2igan data paraphrase`` writes such files;
any labelled dataset can be turned into one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from t2igan import T2IError


@dataclass
class CaptionSet:
    name: str
    path: Path
    captions: list[str]
    attributes: list[dict[str, str]]
    named: list[list[str]]
    ids: list[str] | None  # None when the records carry no image id

    def __len__(self) -> int:
        return len(self.captions)


def resolve_caption_set(spec: str, data_root=None) -> Path:
    """A path to a ``.jsonl`` file, or a bare name ``NAME`` meaning ``DATA_ROOT/NAME.jsonl``."""
    p = Path(spec)
    if p.suffix == ".jsonl" or os.sep in spec or "/" in spec:
        return p
    if data_root is None:
        raise T2IError(f"caption set '{spec}': give a .jsonl file, or a dataset folder for {spec}.jsonl in it")
    return Path(data_root) / f"{spec}.jsonl"


def load_caption_set(path, attribute_values: dict[str, list[str]] | None = None, name: str | None = None) -> CaptionSet:
    """Read and check a caption-set JSONL; with ``attribute_values`` every named attribute must be one of
    its keys and every labelled value one of its values. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        hint = " (write it with `t2igan data paraphrase DIR`)" if path.name.startswith("paraphrase") else ""
        raise T2IError(f"caption set file not found: {path}{hint}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise T2IError(f"{path} is not UTF-8 (byte {e.start})") from None
    captions, attributes, named, ids = [], [], [], []
    with_id = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except ValueError:
            raise T2IError(f"{where}: not valid JSON") from None
        if not isinstance(rec, dict):
            raise T2IError(f"{where}: expected a JSON object with 'caption' and 'attributes'")
        unknown = sorted(set(rec) - {"caption", "attributes", "named", "id", "source_caption"})
        if unknown:
            raise T2IError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: caption, attributes, named, id, "
                           "source_caption)")
        cap = rec.get("caption")
        if not isinstance(cap, str) or not cap.strip():
            raise T2IError(f"{where}: missing or empty 'caption'")
        attrs = rec.get("attributes")
        if not isinstance(attrs, dict) or not attrs or not all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in attrs.items()):
            raise T2IError(f"{where}: 'attributes' must be a non-empty object of attribute name -> value (strings)")
        nm = rec.get("named", sorted(attrs))
        if not isinstance(nm, list) or not nm or not all(isinstance(k, str) for k in nm) or len(set(nm)) != len(nm):
            raise T2IError(f"{where}: 'named' must be a non-empty list of distinct attribute names")
        for k in nm:
            if k not in attrs:
                raise T2IError(f"{where}: 'named' has '{k}' but 'attributes' gives no value for it")
        if attribute_values is not None:
            for k in nm:
                if k not in attribute_values:
                    raise T2IError(f"{where}: names attribute '{k}', which the evaluator does not predict "
                                   f"(it has: {', '.join(attribute_values)})")
            for k, v in attrs.items():
                if k in attribute_values and v not in attribute_values[k]:
                    raise T2IError(f"{where}: attribute {k}={v!r} is not one of {attribute_values[k]}")
        has_id = "id" in rec
        if with_id is None:
            with_id = has_id
        elif has_id != with_id:
            raise T2IError(f"{where}: 'id' must be given on every record or on none")
        if has_id:
            if not isinstance(rec["id"], str) or not rec["id"]:
                raise T2IError(f"{where}: 'id' must be a non-empty string")
            ids.append(rec["id"])
        captions.append(cap.strip())
        attributes.append(dict(attrs))
        named.append(sorted(nm))
    if not captions:
        raise T2IError(f"{path}: no caption records")
    return CaptionSet(name or path.stem, path, captions, attributes, named, ids if with_id else None)
