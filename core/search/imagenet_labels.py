"""Text for the 1,000 ImageNet labels, the vocabulary of the semantic mode's label path.

An image's label vector is the weighted sum of the sentence embeddings of its top ImageNet
labels; how well that matches a query depends on what the label text says. Variants:

  name      the class name alone ("seashore")
  prompt    "a photo of a seashore"
  gloss     the name and its WordNet definition ("seashore: the shore of a sea or ocean")
  hypernym  the gloss plus the WordNet parents ("..., a kind of shore")

Glosses come from timm's bundled ImageNet synset files (timm is a requirement, so they are
always there). Parents need WordNet itself: NLTK's reader over Debian's `wordnet-base`
(/usr/share/wordnet; its missing `lexnames` index is supplied) or NLTK's own data;
without either, `hypernym` falls back to `gloss`
and says so in `label_source`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

VARIANTS = ("name", "prompt", "gloss", "hypernym")
WORDNET_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/wordnet/dict"))
# WordNet 3.0's lexicographer files, which NLTK's reader needs and Debian's wordnet-base lacks.
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]


def _timm_info(name: str) -> Path | None:
    try:
        import timm.data
    except ImportError:
        return None
    path = Path(timm.data.__file__).parent / "_info" / name
    return path if path.exists() else None


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """WordNet ids of the 1,000 classes in model output order ("" when timm lacks them)."""
    path = _timm_info("imagenet_synsets.txt")
    if path is None:
        return ()
    ids = tuple(ln.strip() for ln in path.read_text().splitlines() if ln.strip())
    return ids if len(ids) == 1000 else ()


@functools.cache
def _definitions() -> dict[str, str]:
    path = _timm_info("imagenet_synset_to_definition.txt")
    if path is None:
        return {}
    out = {}
    for ln in path.read_text(encoding="utf-8").splitlines():
        wnid, _, text = ln.partition("\t")
        out[wnid] = text.strip()
    return out


@functools.cache
def wordnet_reader():
    """NLTK's WordNet reader over an installed WordNet database, or None."""
    try:
        from nltk.corpus import wordnet as wn

        wn.synsets("dog")  # raises LookupError when NLTK's data is not installed
        return wn
    except (ImportError, LookupError, OSError):
        pass
    for folder in WORDNET_DIRS:
        if not (folder / "data.noun").exists():
            continue
        try:
            import warnings

            import nltk
            from nltk.corpus.reader.wordnet import WordNetCorpusReader

            root = _with_lexnames(folder)
            if str(root) not in nltk.data.path:  # NLTK reads only under its listed roots
                nltk.data.path.append(str(root))

            class _Reader(WordNetCorpusReader):
                def map_wn(self, version: str = "wordnet") -> None:
                    return None  # cross-version maps are for multilingual data, unused here

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available"
                return _Reader(str(root), None)
        except Exception as exc:  # an unreadable or partial database: go without
            log.warning("WordNet at %s unreadable: %s", folder, exc)
    return None


def _with_lexnames(folder: Path) -> Path:
    """`folder`, or a cached copy of it (about 30 MB) with the lexnames file it lacks."""
    if (folder / "lexnames").exists():
        return folder
    from core.config import resolve_cache_dir

    mirror = resolve_cache_dir() / "wordnet"
    mirror.mkdir(parents=True, exist_ok=True)
    import shutil

    for f in folder.iterdir():  # copies, not links: NLTK refuses paths outside its roots
        dest = mirror / f.name
        if f.is_file() and not dest.exists():
            tmp = dest.with_name(f".{f.name}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(dest)
    lex = "".join(f"{i:02d} {name} {_POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
    from core.io import atomic_write_text

    if not (mirror / "lexnames").exists():
        atomic_write_text(mirror / "lexnames", lex)
    return mirror


_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def _parents(wnid: str) -> list[str]:
    wn = wordnet_reader()
    if wn is None or not wnid:
        return []
    try:
        syn = wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
    except Exception:  # offset not in this WordNet version
        return []
    return [h.lemma_names()[0].replace("_", " ") for h in syn.hypernyms()][:2]


def resolve_variant(variant: str) -> str:
    """The label text `label_texts` will actually give for 1,000 ImageNet names here."""
    if variant in ("name", "prompt") or variant not in VARIANTS:
        return variant
    if not imagenet_wnids() or not _definitions():
        return "name"
    if variant == "hypernym" and wordnet_reader() is None:
        return "gloss"
    return variant


def label_texts(names: list[str], variant: str) -> tuple[list[str], str]:
    """(one text per label, what was actually used). `names` in model output order."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown label text {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "name":
        return list(names), "name"
    if variant == "prompt":
        return [f"a photo of a {n}" for n in names], "prompt"
    wnids, defs = imagenet_wnids(), _definitions()
    if len(names) != 1000 or not wnids or not defs:
        log.warning("no WordNet glosses for these labels: using the names")
        return list(names), "name"
    texts = [f"{n}: {defs[w]}" if defs.get(w) else n for n, w in zip(names, wnids, strict=True)]
    if variant == "gloss":
        return texts, "gloss"
    if wordnet_reader() is None:
        log.info("WordNet is not installed: label text without parents (glosses only)")
        return texts, "gloss"
    out = []
    for t, w in zip(texts, wnids, strict=True):
        parents = _parents(w)
        out.append(f"{t}; a kind of {', '.join(parents)}" if parents else t)
    return out, "hypernym"
