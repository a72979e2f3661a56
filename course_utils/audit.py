"""The sovereignty audit (the chapter's Exercise 5): data, compute, model, output and dependencies, inspected.

A `Setup` describes what to audit as plain configuration: the model (a local folder or a Hub id, with or without a
pinned revision), extra checkpoints, a GGUF file for a local runtime, the training data, where training and
inference run, the requirements files, the notebooks, and the environment variables (this process's by default).
`audit(setup)` looks at all of it as it is (it reads files, hashes data, reads model folders and the installed
packages' own sources) and returns a `Report`: for each check a finding, the evidence, a score from 0 to 1 and a
recommendation. It runs offline and sends nothing anywhere; the one network question, whether the Hugging Face Hub
can be reached, is asked only through a probe the caller passes, and never in offline mode.

What code cannot see (who can read the data, which terms of service apply) comes from the person: `QUESTIONS`,
answered in `Setup.answers` (notebook 06 collects them with a form, or takes them as parameters).
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .atomic import write_json, write_text
from .manifest import file_sha256
from .paths import MODEL_CONFIGS_DIR, REPO_ROOT
from .report import escape, html_page

DIMENSIONS = ("data", "compute", "model", "output", "dependency")
QUESTIONS = {  # key: (dimension, question): what only a person can answer
    "data_access": ("data", "Who can read the training data (people, services, backups)?"),
    "data_terms": ("data", "Under which licence or terms may you train on the data?"),
    "compute_terms": ("compute", "Which terms of service apply to the machines that train and run the model?"),
    "model_terms": ("model", "Which licence or terms of use bind the weights, and do you accept them?"),
    "output_control": ("output", "Who decides what the model may answer (system prompt, filters), and where is "
                                 "that written down?"),
    "dependency_accounts": ("dependency", "Which accounts or keys does the setup need (Hub, trackers, APIs)?"),
}
_TRUE = {"1", "true", "yes", "on"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
_SAFE_SUFFIXES = {".safetensors", ".gguf"}
_OPEN_LICENCES = re.compile(r"apache|\bmit\b|bsd|cc0|cc-by|public domain|lgpl|gpl|mpl|openrail|isc|unlicense",
                            re.IGNORECASE)
_RESTRICTED_LICENCES = re.compile(r"busl|business source|sspl|elastic|commons clause|proprietary|non-commercial|"
                                  r"community license|llama \d|gemma", re.IGNORECASE)


_LIST_FIELDS = ("checkpoints", "data", "requirements", "notebooks")  # Setup's fields by kind, for from_dict
_MAP_FIELDS = ("environment", "packages", "answers")
_OPTIONAL_FIELDS = ("revision", "gguf", "system_prompt")


@dataclass
class Setup:
    """What to audit, as configuration. Paths are absolute or relative to the repository."""
    name: str
    model: str  # a local model folder, or a Hub id
    revision: str | None = None  # for a Hub id: a 40-hex commit pins it; None or a branch name floats
    checkpoints: tuple[str, ...] = ()  # other weight files or folders in use (adapters, fine-tunes)
    gguf: str | None = None  # a GGUF file that a local runtime (llama.cpp, Ollama) runs
    data: tuple[str, ...] = ()  # training data: local files or folders, Hub dataset ids, URLs
    training: str = "local"  # "local", or where training runs (a provider, a URL)
    inference: str = "local"  # "local", or the remote endpoint that answers
    system_prompt: str | None = None  # a system prompt the application adds to every conversation
    requirements: tuple[str, ...] = ("requirements.txt",)
    notebooks: tuple[str, ...] = ()  # notebooks whose code is searched for external services
    environment: dict[str, str] | None = None  # the environment variables in force; None: this process's
    packages: dict[str, str] | None = None  # installed packages {name: version}; None: this environment's
    answers: dict[str, str] = field(default_factory=dict)  # QUESTIONS key -> the person's answer

    def env(self) -> dict[str, str]:
        return dict(os.environ) if self.environment is None else dict(self.environment)

    def unanswered(self) -> list[str]:
        """The keys of QUESTIONS that have no answer yet."""
        return [key for key in QUESTIONS if not str(self.answers.get(key, "")).strip()]

    def to_dict(self) -> dict:
        """The setup as plain values (JSON-ready): what `Setup.from_dict` reads back."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> Setup:
        """A Setup from plain values (a dict, e.g. read from JSON; lists become tuples). An unknown field, a missing
        name or model, a value of the wrong type or an answer to no question of QUESTIONS is a ValueError that
        names it."""
        if not isinstance(values, dict):
            raise ValueError(f"a setup is a dict of Setup's fields, not {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; a Setup has: {', '.join(known)}")
        for name in ("name", "model"):
            if not isinstance(values.get(name), str) or not values[name].strip():
                raise ValueError(f"{name!r} must be a non-empty string, not {values.get(name)!r}")
        kwargs = {}
        for name, value in values.items():
            if name in _LIST_FIELDS:
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
                    raise ValueError(f"{name!r} must be a list of non-empty strings, not {value!r}")
                value = tuple(value)
            elif name in _MAP_FIELDS:
                strings = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                          for k, v in value.items())
                if not strings and (value is not None or name == "answers"):
                    raise ValueError(f"{name!r} must be a dict of strings to strings"
                                     + ("" if name == "answers" else " (or None: this machine's)") + f", not {value!r}")
            elif not isinstance(value, str) and not (value is None and name in _OPTIONAL_FIELDS):
                raise ValueError(f"{name!r} must be a string{' or None' if name in _OPTIONAL_FIELDS else ''}, "
                                 f"not {value!r}")
            kwargs[name] = value
        stray = sorted(set(kwargs.get("answers", {})) - set(QUESTIONS))
        if stray:
            raise ValueError(f"answers to no question: {', '.join(map(repr, stray))}; the questions are "
                             f"{', '.join(QUESTIONS)}")
        return cls(**kwargs)


@dataclass(frozen=True)
class Finding:
    dimension: str
    check: str
    score: float  # 0 (owned by someone else) to 1 (yours)
    finding: str
    evidence: tuple[str, ...]
    recommendation: str = ""  # empty: nothing to change

    @property
    def key(self) -> str:
        """The check's name with its dimension ("model/format"), unique within a report."""
        return f"{self.dimension}/{self.check}"


@dataclass
class Report:
    setup: Setup
    findings: list[Finding]

    def scores(self) -> dict[str, int]:
        """Each dimension's score out of 100: the mean of its checks."""
        out = {}
        for dimension in DIMENSIONS:
            values = [f.score for f in self.findings if f.dimension == dimension]
            out[dimension] = round(100 * sum(values) / len(values)) if values else 0
        return out

    def overall(self) -> int:
        scores = self.scores()
        return round(sum(scores.values()) / len(scores))

    def by_key(self) -> dict[str, Finding]:
        """{"dimension/check": finding} for every check."""
        return {f.key: f for f in self.findings}

    def failing(self) -> list[Finding]:
        """The findings that score below 1: what a plan has to fix, or say why it keeps."""
        return [f for f in self.findings if f.score < 1]

    def to_dict(self) -> dict:
        """The report as plain values (JSON-ready): the setup, every finding, the scores and the plan."""
        return {"setup": self.setup.to_dict(), "findings": [{**asdict(f), "evidence": list(f.evidence)}
                                                            for f in self.findings],
                "scores": self.scores(), "overall": self.overall(), "plan": self.plan()}

    def plan(self) -> dict[str, list[str]]:
        """What to change to raise each dimension's score: the recommendations of its checks below 1, and the
        questions left unanswered."""
        plan = {d: [f"{f.check}: {f.recommendation}" for f in self.findings
                    if f.dimension == d and f.score < 1 and f.recommendation] for d in DIMENSIONS}
        for key, (dimension, question) in QUESTIONS.items():
            if not self.setup.answers.get(key, "").strip():
                plan[dimension].append(f"answer: {question}")
        return plan

    def answers(self) -> dict[str, list[tuple[str, str]]]:
        """{dimension: [(question, answer)]} for what the person told the audit."""
        out = {d: [] for d in DIMENSIONS}
        for key, (dimension, question) in QUESTIONS.items():
            out[dimension].append((question, self.setup.answers.get(key, "").strip() or "(not answered)"))
        return out

    def summary(self) -> str:
        """One line per check (dimension, check, score, finding), then the scores: the report at a glance."""
        lines = [f"{f.dimension:<11}{f.check:<15}{f.score:5.2f}  {f.finding}" for f in self.findings]
        scores = ", ".join(f"{d} {v}" for d, v in self.scores().items())
        return "\n".join(lines) + f"\n\nscores: {scores}; overall {self.overall()}/100"

    def to_markdown(self) -> str:
        scores = self.scores()
        lines = [f"# Sovereignty audit: {self.setup.name}", "",
                 f"Overall score: **{self.overall()}/100**", "", "| dimension | score |", "|---|---|"]
        lines += [f"| {d} | {scores[d]} |" for d in DIMENSIONS]
        for dimension in DIMENSIONS:
            lines += ["", f"## {dimension.capitalize()} ({scores[dimension]}/100)", ""]
            for f in (f for f in self.findings if f.dimension == dimension):
                lines.append(f"- **{f.check}** ({f.score:.2f}): {f.finding}")
                lines += [f"  - evidence: {e}" for e in f.evidence]
                if f.recommendation and f.score < 1:
                    lines.append(f"  - recommendation: {f.recommendation}")
            for question, answer in self.answers()[dimension]:
                lines.append(f"- *{question}* {answer}")
        lines += ["", "## Plan: what to change to raise each score", ""]
        for dimension, steps in self.plan().items():
            lines += [f"- **{dimension}**: " + ("nothing to change" if not steps else steps[0])]
            lines += [f"  - {s}" for s in steps[1:]]
        return "\n".join(lines) + "\n"

    def to_html(self, compare: dict[str, dict[str, int]] | None = None) -> str:
        """The report as a standalone page; `compare` ({setup name: scores}) draws other setups' scores beside
        this one's in the chart."""
        return html_page(f"Sovereignty audit: {self.setup.name}", _report_body(self, compare), css=_AUDIT_CSS)

    def write_html(self, path: str | Path, compare: dict[str, dict[str, int]] | None = None) -> Path:
        """Write the standalone HTML page to `path` (atomically)."""
        return write_text(path, self.to_html(compare))

    def write(self, folder: str | Path, stem: str = "audit",
              compare: dict[str, dict[str, int]] | None = None) -> dict[str, Path]:
        """Write the report as markdown, as a standalone HTML page and as JSON (`to_dict`), atomically; returns
        the three paths."""
        folder = Path(folder)
        return {"markdown": write_text(folder / f"{stem}.md", self.to_markdown()),
                "html": self.write_html(folder / f"{stem}.html", compare),
                "json": write_json(folder / f"{stem}.json", self.to_dict())}


def changes(before: Report, after: Report) -> dict[str, tuple[float, float]]:
    """{"dimension/check": (score before, score after)} for every check whose score changed between two audits."""
    old, new = before.by_key(), after.by_key()
    return {key: (old[key].score, new[key].score) for key in old if key in new and old[key].score != new[key].score}


def report_differences(saved: dict, report: Report) -> list[str]:
    """How a saved report (`Report.to_dict`, e.g. read back from JSON) differs from `report`: each check's score
    and finding, each dimension's score and the overall score. Empty when the saved report is this audit's."""
    if not isinstance(saved, dict) or not isinstance(saved.get("findings"), list):
        return ["the saved report is not a report (a dict with a list of findings)"]
    found = {f"{f.get('dimension')}/{f.get('check')}": f for f in saved["findings"] if isinstance(f, dict)}
    differences = []
    for key, finding in report.by_key().items():
        mine = found.pop(key, None)
        if mine is None:
            differences.append(f"{key}: missing from the saved report")
        elif mine.get("score") != finding.score or mine.get("finding") != finding.finding:
            differences.append(f"{key}: saved {mine.get('score')!r} ({mine.get('finding')!r}), the audit gives "
                               f"{finding.score!r} ({finding.finding!r})")
    differences += [f"{key}: in the saved report, but the audit has no such check" for key in found]
    if saved.get("scores") != report.scores():
        differences.append(f"scores: saved {saved.get('scores')!r}, the audit gives {report.scores()!r}")
    if saved.get("overall") != report.overall():
        differences.append(f"overall: saved {saved.get('overall')!r}, the audit gives {report.overall()!r}")
    return differences


# ----------------------------------------------------------------------------------------------------- helpers
def _path(entry: str) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def offline_mode(env: dict[str, str]) -> bool:
    """True when the Hugging Face libraries will not touch the network (HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE)."""
    return _is_true(env.get("HF_HUB_OFFLINE")) or _is_true(env.get("TRANSFORMERS_OFFLINE"))


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens (it is closed at once; not a byte of data is sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name not in ("PROVENANCE.md", "README.md"))


def content_hashes(file: Path) -> list[str]:
    """The file's SHA-256, and for a compressed file (.xz, .gz, .bz2) also its content's: a provenance record may
    list either."""
    import bz2
    import gzip
    import hashlib
    import lzma

    hashes = [file_sha256(file)]
    opener = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}.get(file.suffix)
    if opener:
        digest = hashlib.sha256()
        with opener(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        hashes.append(digest.hexdigest())
    return hashes


def _provenance_files(file: Path) -> list[Path]:
    """PROVENANCE.md (or README.md) files in the file's folder and its parents, up to the repository or '/'."""
    found = []
    for folder in [file.parent, *file.parent.parents]:
        found += [folder / n for n in ("PROVENANCE.md", "README.md") if (folder / n).is_file()]
        if folder == REPO_ROOT or folder == REPO_ROOT.parent:
            break
    return found


def is_pickle(path: Path) -> bool:
    """True for a file that Python's pickle would load (and could run code from): torch.save's zip archive (with
    a data.pkl inside) or a bare pickle stream (it starts with the protocol byte 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x80"):
        return True
    if head == b"PK\x03\x04":
        import zipfile

        try:
            return any(n.endswith(".pkl") for n in zipfile.ZipFile(path).namelist())
        except zipfile.BadZipFile:
            return False
    return False


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in _PICKLE_SUFFIXES | _SAFE_SUFFIXES)


def _local_model_dir(setup: Setup) -> Path | None:
    """The model's folder on this machine: the given folder, or the Hub cache's snapshot (never downloaded)."""
    if _path(setup.model).is_dir():
        return _path(setup.model)
    if not _HUB_ID.match(setup.model):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(setup.model, revision=setup.revision, local_files_only=True))
    except (OSError, ValueError):  # not in the cache (local_files_only never reaches the network)
        return None


def _front_matter(readme: Path) -> dict[str, str]:
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"---\n(.*?)\n---", text, re.DOTALL)
    if not match:
        return {}
    pairs = (line.split(":", 1) for line in match.group(1).splitlines() if ":" in line and not line.startswith(" "))
    return {k.strip(): v.strip() for k, v in pairs}


def model_licence(folder: str | Path) -> str | None:
    """The licence a model folder's card (README.md) states: its front matter's `license:`, else the text of its
    "Licence" section (the first 160 characters); None when it states none."""
    readme = Path(folder) / "README.md"
    if not readme.exists():
        return None
    meta = _front_matter(readme)
    if meta.get("license") or meta.get("licence"):
        return meta.get("license") or meta.get("licence")
    section = re.search(r"^#+\s*Licen[cs]e\s*\n+(.+?)(?:\n#|\Z)", readme.read_text(encoding="utf-8"),
                        re.MULTILINE | re.DOTALL | re.IGNORECASE)
    return " ".join(section.group(1).split())[:160] if section else None


def course_model_record(hub_id: str) -> dict[str, str] | None:
    """The course's own record of a real model (data/model_configs/PROVENANCE.md): its Hub access and licence."""
    table = (MODEL_CONFIGS_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    name = hub_id.replace("/", "__") + ".json"
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == name and len(cells) >= 7:
            return {"access": cells[5], "licence": cells[6]}
    return None


def local_paths(setup: Setup) -> list[Path]:
    """Every file or folder on this machine that auditing the setup reads (the model folder, checkpoints, the GGUF
    file, data, requirements, notebooks), as absolute paths; Hub ids and URLs are not paths and are left out.
    (The Hub cache, read for a Hub model, is not listed.)"""
    entries = [setup.model, *setup.checkpoints, *([setup.gguf] if setup.gguf else []), *setup.data,
               *setup.requirements, *setup.notebooks]
    return [_path(e) for e in entries if _path(e).exists()]


def _read_gguf(path: Path):
    """The GGUF file read once (its vocabulary takes a while to parse) for the checks that need it: a new reader
    when the file changes."""
    stat = path.stat()
    return _read_gguf_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_gguf_cached(path: str, mtime_ns: int, size: int):
    from gguf import GGUFReader

    return GGUFReader(path)


def _remote(where: str) -> bool:
    return where.strip().lower() not in ("", "local")


# ----------------------------------------------------------------------------------------------------- data
def check_data_location(setup: Setup) -> Finding:
    if not setup.data:
        return Finding("data", "location", 0.0, "no training data is listed", (),
                       "list the data the model was trained on in Setup.data")
    evidence, scores = [], []
    for entry in setup.data:
        path = _path(entry)
        if path.exists():
            files = _data_files(path)
            size = sum(f.stat().st_size for f in files)
            evidence.append(f"{_shown(path)}: {len(files)} files, {size / 1e6:.2f} MB, on this machine")
            scores.append(1.0)
        elif entry.startswith(("http://", "https://")):
            evidence.append(f"{entry}: a URL, downloaded when used")
            scores.append(0.0)
        elif _HUB_ID.match(entry):
            evidence.append(f"{entry}: a Hub dataset id, downloaded from the Hub (or its cache) when used")
            scores.append(0.0)
        else:
            evidence.append(f"{entry}: not found")
            scores.append(0.0)
    local = sum(scores)
    return Finding("data", "location", sum(scores) / len(scores),
                   f"{local:.0f} of {len(scores)} data sources are local files", tuple(evidence),
                   "keep a local, hashed copy of every dataset (datasets' save_to_disk, or the files themselves)")


def check_data_provenance(setup: Setup) -> Finding:
    files = [f for e in setup.data if _path(e).exists() for f in _data_files(_path(e))]
    if not files:
        return Finding("data", "provenance", 0.0, "no local data file to check", (),
                       "keep the data locally with a PROVENANCE.md: source, licence and SHA-256 of each file")
    evidence, total = [], 0.0
    for file in files:
        digests = content_hashes(file)
        digest = digests[0]
        records = _provenance_files(file)
        texts = {r: r.read_text(encoding="utf-8", errors="replace") for r in records}
        hashed = [r for r, t in texts.items() if any(d in t for d in digests)]
        licensed = [r for r, t in texts.items() if re.search(r"licen[cs]e|public domain", t, re.IGNORECASE)]
        if hashed and licensed:
            total += 1.0
            evidence.append(f"{file.name}: sha256 {digest[:12]}… listed in {_shown(hashed[0])}, licence stated")
        elif licensed:
            total += 0.5
            evidence.append(f"{file.name}: sha256 {digest[:12]}… not listed; licence stated in {_shown(licensed[0])}")
        else:
            evidence.append(f"{file.name}: sha256 {digest[:12]}…, no provenance record with a licence")
    return Finding("data", "provenance", total / len(files),
                   f"{sum(1 for e in evidence if 'listed in' in e)} of {len(files)} files have their hash in a "
                   "provenance record with a licence", tuple(evidence),
                   "write a PROVENANCE.md beside the data: where each file came from, its licence, its SHA-256")


def check_data_network(setup: Setup) -> Finding:
    env = setup.env()
    fetched = [e for e in setup.data if not _path(e).exists() and (_HUB_ID.match(e) or "://" in e)]
    datasets_offline = _is_true(env.get("HF_DATASETS_OFFLINE")) or _is_true(env.get("HF_HUB_OFFLINE"))
    evidence = (f"HF_DATASETS_OFFLINE={env.get('HF_DATASETS_OFFLINE', '(unset)')}, "
                f"HF_HUB_OFFLINE={env.get('HF_HUB_OFFLINE', '(unset)')}",
                *[f"fetched when used: {e}" for e in fetched])
    if fetched:
        return Finding("data", "network", 0.0, f"{len(fetched)} dataset(s) would be fetched from the network",
                       evidence, "download once, save a local copy with its hash, and load it from disk offline")
    return Finding("data", "network", 1.0 if datasets_offline else 0.8,
                   "no dataset is fetched from the network" + ("" if datasets_offline else
                                                               " (offline mode is off, nothing forbids it)"),
                   evidence, "" if datasets_offline else "set HF_DATASETS_OFFLINE=1 so nothing is fetched by mistake")


# ----------------------------------------------------------------------------------------------------- compute
def check_compute_location(setup: Setup) -> Finding:
    import torch

    device = "a CUDA GPU" if torch.cuda.is_available() else "the CPU"
    evidence = (f"training: {setup.training}", f"inference: {setup.inference}",
                f"this machine computes on {device} (torch {torch.__version__})")
    remote = [what for what, where in (("training", setup.training), ("inference", setup.inference)) if _remote(where)]
    if not remote:
        return Finding("compute", "location", 1.0, f"training and inference run on this machine ({device})", evidence)
    return Finding("compute", "location", 0.5 if len(remote) == 1 else 0.0,
                   f"{' and '.join(remote)} run on someone else's machine", evidence,
                   "run inference locally (a GGUF file in llama.cpp or Ollama); train on a machine you control")


def check_compute_network(setup: Setup, probe: Callable[[], bool] | None = None) -> Finding:
    env = setup.env()
    switches = f"HF_HUB_OFFLINE={env.get('HF_HUB_OFFLINE', '(unset)')}, " \
               f"TRANSFORMERS_OFFLINE={env.get('TRANSFORMERS_OFFLINE', '(unset)')}"
    if offline_mode(env):
        return Finding("compute", "network", 1.0, "offline mode is on: the Hub was not probed, and the Hugging Face "
                       "libraries refuse every request", (switches, "Hub reachability: offline mode on, not probed"))
    if probe is None:
        reach = "not probed (no probe given)"
    else:
        reach = "reachable (a TCP connection opened; no data sent)" if probe() else "not reachable"
    return Finding("compute", "network", 0.5, "offline mode is off: the libraries may download models and send "
                   "telemetry", (switches, f"Hub: {reach}"),
                   "once the model and data are on disk, set HF_HUB_OFFLINE=1 (the course's tests run that way)")


def check_compute_runtime(setup: Setup) -> Finding:
    import importlib.util

    runtimes = [n for n, m in (("llama-cpp-python", "llama_cpp"),) if importlib.util.find_spec(m)]
    if not setup.gguf:
        return Finding("compute", "local runtime", 0.0, "no GGUF file: the model runs only inside a Python ML stack",
                       (f"llama.cpp bindings installed: {', '.join(runtimes) or 'none'}",),
                       "export the model to GGUF (course_utils.export, or llama.cpp's convert_hf_to_gguf.py) and run "
                       "it in llama.cpp or Ollama")
    path = _path(setup.gguf)
    if not path.is_file():
        return Finding("compute", "local runtime", 0.0, f"the GGUF file {setup.gguf} does not exist", (),
                       "export the model to GGUF first")
    reader = _read_gguf(path)
    arch = reader.get_field("general.architecture")
    evidence = (f"{_shown(path)}: {path.stat().st_size / 1e6:.1f} MB, {len(reader.tensors)} tensors, architecture "
                f"{arch.contents() if arch else 'unknown'}",
                f"llama.cpp bindings installed: {', '.join(runtimes) or 'none'}")
    return Finding("compute", "local runtime", 1.0, "a GGUF file runs in llama.cpp (or Ollama) with no Python ML "
                   "stack", evidence)


# ----------------------------------------------------------------------------------------------------- model
def check_model_source(setup: Setup) -> Finding:
    folder = _path(setup.model)
    if folder.is_dir():
        return Finding("model", "source", 1.0, "the weights are a folder on this machine",
                       (f"{_shown(folder)}",))
    if not _HUB_ID.match(setup.model):
        return Finding("model", "source", 0.0, f"{setup.model} is neither a local folder nor a Hub id", (),
                       "point Setup.model at the folder that holds the weights")
    revision = setup.revision or "(none: the main branch, whatever it holds when downloaded)"
    if setup.revision and _COMMIT.match(setup.revision):
        return Finding("model", "source", 0.6, "a Hub model pinned to one commit", (f"{setup.model} @ {revision}",),
                       "keep a local copy too (hf download, or save_pretrained): a Hub repository can be removed "
                       "or made gated")
    return Finding("model", "source", 0.2, "a Hub model at a floating revision: the weights can change under you",
                   (f"{setup.model} @ {revision}",),
                   "pin revision= to a 40-character commit and keep a local copy of the weights")


def check_model_format(setup: Setup) -> Finding:
    folder = _local_model_dir(setup)
    places = ([folder] if folder else []) + [_path(c) for c in setup.checkpoints]
    files = [f for p in places if p.exists() for f in _weight_files(p)]
    missing = [c for c in setup.checkpoints if not _path(c).exists()]
    if not files:
        return Finding("model", "format", 0.5 if not missing else 0.0, "the weight files are not on this machine, "
                       "so their format cannot be inspected", tuple(f"not found: {m}" for m in missing),
                       "download the weights and check that they are safetensors")
    pickled = [f for f in files if is_pickle(f)]
    evidence = tuple(f"{_shown(f)}: {'pickle (can run code when loaded)' if f in pickled else f.suffix[1:]}, "
                     f"{f.stat().st_size / 1e6:.1f} MB" for f in files)
    if pickled:
        return Finding("model", "format", 0.0, f"{len(pickled)} of {len(files)} weight files are pickles: loading "
                       "one runs whatever code it holds", evidence,
                       "convert them to safetensors (load once in a sandbox, save_pretrained(safe_serialization=True)) "
                       "and load with use_safetensors=True")
    return Finding("model", "format", 1.0, "every weight file is safetensors or GGUF (data only, no code)", evidence)


def check_model_licence(setup: Setup) -> Finding:
    folder = _local_model_dir(setup)
    evidence, licence, gated = [], None, None
    if folder:
        readme = folder / "README.md"
        if readme.exists():
            licence = model_licence(folder)
            gated = any(k.startswith("extra_gated") for k in _front_matter(readme)) or None
            evidence.append(f"{_shown(readme)}: licence {licence or 'not stated'}")
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
            if (folder / name).exists():
                evidence.append(f"{_shown(folder / name)} present")
    if _HUB_ID.match(setup.model) and not _path(setup.model).exists():
        record = course_model_record(setup.model)
        if record:
            licence = licence or record["licence"]
            gated = "gated" in record["access"].lower() and "not gated" not in record["access"].lower()
            evidence.append(f"data/model_configs/PROVENANCE.md: {record['access']}, {record['licence']}")
        else:
            evidence.append("no local model card, and not in the course's record of real models")
    if not licence:
        return Finding("model", "licence", 0.0, "no licence found for the weights", tuple(evidence),
                       "find the model's licence (its model card) and keep it beside the weights")
    restricted = bool(_RESTRICTED_LICENCES.search(licence))
    score = 0.5 if restricted or not _OPEN_LICENCES.search(licence) else 1.0
    if gated:
        score = min(score, 0.5)
    finding = (f"licence: {licence}" + (" (a licence with use restrictions)" if restricted else "")
               + ("; the Hub repository is gated (access must be granted)" if gated else ""))
    return Finding("model", "licence", score, finding, tuple(evidence),
                   "" if score == 1 else "read the licence's restrictions; prefer openly licensed, ungated weights")


def check_model_code(setup: Setup) -> Finding:
    folder = _local_model_dir(setup)
    if not folder:
        return Finding("model", "remote code", 0.5, "the model's config is not on this machine, so whether it needs "
                       "trust_remote_code cannot be checked", (), "download the config and read its auto_map")
    config = folder / "config.json"
    auto_map = json.loads(config.read_text(encoding="utf-8")).get("auto_map") if config.exists() else None
    code = sorted(p.name for p in folder.glob("*.py"))
    evidence = (f"{_shown(config)}: auto_map {auto_map or 'absent'}", f"Python files in the folder: {code or 'none'}")
    if auto_map or code:
        return Finding("model", "remote code", 0.0, "the model needs trust_remote_code=True: its own Python code "
                       "runs when it loads", evidence, "prefer an architecture transformers implements itself, or "
                       "read and pin the code (revision=) before trusting it")
    return Finding("model", "remote code", 1.0, "no custom code: transformers' own Llama code runs it "
                   "(trust_remote_code=False)", evidence)


# ----------------------------------------------------------------------------------------------------- output
def _template_of(folder: Path) -> tuple[str | None, Path | None]:
    file = folder / "chat_template.jinja"
    if file.exists():
        return file.read_text(encoding="utf-8"), file
    config = folder / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if template:
            return template, config
    return None, None


def default_system_prompt(template: str) -> str | None:
    """The system message a chat template inserts by itself when the conversation has none (e.g. 'You are ...')."""
    match = re.search(r"(You are [^'\"\n]{3,160})", template)
    return match.group(1) if match else None


def check_output_template(setup: Setup) -> Finding:
    if _remote(setup.inference):
        return Finding("output", "template", 0.0, "a remote endpoint applies its own template, system prompt and "
                       "filters, which you cannot read", (f"inference: {setup.inference}",),
                       "run the model locally, where the chat template is a file you can read")
    folder = _local_model_dir(setup)
    template, source = _template_of(folder) if folder else (None, None)
    evidence = []
    if setup.gguf and _path(setup.gguf).is_file():
        embedded = _read_gguf(_path(setup.gguf)).get_field("tokenizer.chat_template")
        evidence.append(f"{_shown(_path(setup.gguf))}: chat template "
                        f"{'embedded (' + str(len(embedded.contents())) + ' characters)' if embedded else 'absent'}")
        modelfile = _path(setup.gguf).parent / "Modelfile"
        if modelfile.exists():
            system = re.search(r'^SYSTEM """(.*?)"""', modelfile.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
            evidence.append(f"{_shown(modelfile)}: SYSTEM {'set' if system else 'not set'}")
    if template is None:
        return Finding("output", "template", 0.5, "no chat template found in the model folder", tuple(evidence),
                       "save the tokenizer with its chat template beside the weights")
    hidden = default_system_prompt(template)
    evidence.insert(0, f"{_shown(source)}: {len(template)} characters, default system prompt: {hidden or 'none'}")
    if setup.system_prompt:
        evidence.append(f"the application's system prompt: {setup.system_prompt[:120]!r}")
    if hidden:
        return Finding("output", "template", 0.7, "the chat template inserts a system prompt of its author's when "
                       "you give none", tuple(evidence), "give your own system prompt, or edit the template")
    return Finding("output", "template", 1.0, "the chat template only formats turns; nothing is said on your behalf",
                   tuple(evidence))


def check_output_control(setup: Setup) -> Finding:
    if _remote(setup.inference):
        return Finding("output", "control", 0.0, "the provider decides what the model may answer and can change it "
                       "at any time", (f"inference: {setup.inference}",), "move inference to a machine you control")
    folder = _local_model_dir(setup)
    _, source = _template_of(folder) if folder else (None, None)
    editable = [p for p in ([source] if source else []) + ([_path(setup.gguf)] if setup.gguf else [])
                if p.exists() and os.access(p, os.W_OK)]
    evidence = tuple(f"{_shown(p)}: writable by you" for p in editable) or ("no writable template file found",)
    if editable:
        return Finding("output", "control", 1.0, "you control the answers: the template and system prompt are "
                       "local files you can change", evidence)
    return Finding("output", "control", 0.5, "the template cannot be changed here", evidence,
                   "keep a writable copy of the model folder and its tokenizer files")


# ----------------------------------------------------------------------------------------------------- dependency
@dataclass(frozen=True)
class Caller:
    """A package that calls home, as read in its source: what it sends and what turns it off."""
    package: str
    source: str  # the file inside the installed package where it happens
    pattern: str  # a string that marks the place in that file
    sends: str
    off: tuple[tuple[str, str], ...]  # (variable, value that turns it off; "*" = set to anything)
    note: str = ""
    read: str = ""  # the version whose source the course read (the evidence names the place where it is installed)


CALLERS = (
    Caller("huggingface_hub", "huggingface_hub/utils/_telemetry.py", "def send_telemetry",
           "a HEAD request to the Hub's /api/telemetry/<topic> with a user agent naming the library, its version, "
           "Python's and torch's versions; the other libraries' pings go through it",
           (("HF_HUB_DISABLE_TELEMETRY", "1"), ("DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1"), ("HF_HUB_OFFLINE", "1")),
           read="1.33.0"),
    Caller("trl", "trl/trainer/base_trainer.py", " send_telemetry(",
           "one ping each time a trainer is built: the trainer class, the model architecture, whether peft is used, "
           "where the dataset came from (hub, files, memory), distributed mode, world size, device and GPU name",
           (("HF_HUB_DISABLE_TELEMETRY", "1"), ("DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1"), ("HF_HUB_OFFLINE", "1"),
            ("CI", "*")),
           read="1.14.0"),
    Caller("transformers", "transformers/utils/hub.py", "def http_user_agent",
           "with every Hub download: a user agent with transformers', Python's and torch's versions and a session "
           "id, and (telemetry on) what the download is for, e.g. the quantization method",
           (("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_OFFLINE", "1")),
           "HF_HUB_DISABLE_TELEMETRY trims the user agent to 'telemetry/off'; only offline mode stops the downloads",
           read="5.17.0"),
    Caller("gradio", "gradio/analytics.py", "def analytics_enabled",
           "when an app is built and launched: gradio's version, the mode, the names of its components and events, "
           "whether it uses auth or custom components; and a version check against gradio's own server",
           (("GRADIO_ANALYTICS_ENABLED", "False"),),
           "sent through huggingface_hub's _send_telemetry_in_thread, which does not read HF_HUB_DISABLE_TELEMETRY; "
           "any value but 'True' turns it off",
           read="6.31.0"),
    Caller("unsloth", "unsloth/models/_utils.py", "def get_statistics",
           "on each model load, downloads a README from the Hub repository unslothai/<environment>, naming which "
           "cloud you are on (colab, kaggle, aws, gcp, azure, runpod, lambda or other)",
           (("UNSLOTH_DISABLE_STATISTICS", "*"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")),
           "any value of UNSLOTH_DISABLE_STATISTICS turns it off, even 0",
           read="2026.10.9"),
    Caller("wandb", "wandb/env.py", 'ERROR_REPORTING = "WANDB_ERROR_REPORTING"',
           "in its default online mode, every logged metric, the run's config, system metrics, git state and code "
           "to the W&B server; and usage and error reports unless error reporting is off",
           (("WANDB_MODE", "disabled"), ("WANDB_MODE", "offline")),
           "WANDB_DISABLED is read by neither wandb 0.31 nor transformers 5.17; WANDB_ERROR_REPORTING=false stops "
           "the error reports only; transformers 5 reports to no tracker unless report_to names one",
           read="0.31.0"),
)


def _installed(setup: Setup) -> dict[str, str]:
    if setup.packages is not None:
        return {k.lower().replace("_", "-"): v for k, v in setup.packages.items()}
    return {d.metadata["Name"].lower().replace("_", "-"): d.version for d in importlib.metadata.distributions()
            if d.metadata["Name"]}


def source_evidence(caller: Caller) -> str | None:
    """'file:line' where the installed package does what the course read in it (None if not installed here or
    the place is gone). The file is read as text, never imported: unsloth, for one, will not import on a CPU."""
    try:
        located = importlib.metadata.distribution(caller.package).locate_file(caller.source)
        lines = Path(located).read_text(encoding="utf-8").splitlines()
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None
    number = next((i for i, line in enumerate(lines, 1) if caller.pattern in line), None)
    return f"{caller.source}:{number}" if number else None


def telemetry_off(caller: Caller, env: dict[str, str]) -> str | None:
    """The variable that turns this caller off in `env` ("HF_HUB_OFFLINE=1"), or None if it is on."""
    for variable, value in caller.off:
        current = env.get(variable)
        if current is None:
            continue
        if value == "*" or (value == "1" and _is_true(current)) or current.strip().lower() == value.lower():
            return f"{variable}={current}"
    if caller.package == "gradio" and env.get("GRADIO_ANALYTICS_ENABLED", "True") != "True":
        return f"GRADIO_ANALYTICS_ENABLED={env['GRADIO_ANALYTICS_ENABLED']}"
    return None


def check_dependency_telemetry(setup: Setup) -> Finding:
    env, installed = setup.env(), _installed(setup)
    evidence, on = [], []
    for caller in CALLERS:
        version = installed.get(caller.package.replace("_", "-"))
        if not version:
            continue
        off = telemetry_off(caller, env)
        where = source_evidence(caller) if setup.packages is None else None
        where = where or f"read in {caller.package} {caller.read}'s {caller.source}"
        evidence.append(f"{caller.package} {version}: {'off (' + off + ')' if off else 'ON'}; sends {caller.sends}"
                        f" [{where}]" + (f"; {caller.note}" if caller.note else ""))
        if not off:
            on.append(caller)
    if not evidence:
        return Finding("dependency", "telemetry", 1.0, "none of the packages known to call home is installed", ())
    senders = len(evidence)
    switches: dict[str, list[str]] = {}
    for caller in on:
        variable, value = caller.off[0]
        switches.setdefault(f"{variable}={'1' if value == '*' else value}", []).append(caller.package)
    recommendation = "; ".join(f"set {switch} ({', '.join(packages)})" for switch, packages in switches.items())
    if recommendation:
        recommendation += ", in the environment Python starts in"
    return Finding("dependency", "telemetry", (senders - len(on)) / senders,
                   f"{len(on)} of {senders} installed packages that call home would do so now", tuple(evidence),
                   recommendation)


def _requirements(setup: Setup) -> list[tuple[str, str, str]]:
    """(file, package, specifier) for every requirement line of the setup's requirements files."""
    found = []
    for entry in setup.requirements:
        path = _path(entry)
        if not path.exists():
            found.append((entry, "", "file not found"))
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            match = re.match(r"([A-Za-z0-9_.\-\[\]]+)\s*(.*)", line)
            found.append((_shown(path), re.sub(r"\[.*\]", "", match.group(1)), match.group(2).strip()))
    return found


def check_dependency_pins(setup: Setup) -> Finding:
    requirements, installed = _requirements(setup), _installed(setup)
    if not requirements:
        return Finding("dependency", "pins", 0.0, "no requirements file lists the dependencies", (),
                       "write a requirements.txt with every version pinned (==)")
    floating, mismatched = [], []
    for file, package, spec in requirements:
        if not spec.startswith("==") or "*" in spec:
            floating.append(f"{file}: {package} {spec or '(no version)'}")
            continue
        have = installed.get(package.lower().replace("_", "-"))
        if have and have.split("+")[0] != spec[2:].strip():  # a local build label (torch's "+cpu") is the same release
            mismatched.append(f"{package}: pinned {spec[2:]}, installed {have}")
    good = len(requirements) - len(floating) - len(mismatched)
    evidence = (f"{good} of {len(requirements)} requirements pinned and installed at their pin", *floating, *mismatched)
    return Finding("dependency", "pins", good / len(requirements),
                   f"{len(floating)} floating, {len(mismatched)} installed at another version than pinned",
                   evidence, "" if good == len(requirements) else
                   "pin every requirement with == and install exactly those (pip install -r requirements.txt)")


# What the course found changed in its tool chain's licences (checked in PyPI's releases; see notebook 06).
LICENCE_HISTORY = {
    "mergekit": "LGPL-3.0-or-later up to 0.0.6 on PyPI; the repository then moved to the Business Source License "
                "(source-available, commercial use restricted) and back to LGPL; 0.1.4 and 0.1.5 on PyPI are "
                "LGPL-3.0-only. A copy installed from the repository during the BSL months carries the BSL.",
}


def package_licence(name: str) -> str:
    """A package's licence as its installed metadata states it (License-Expression, License, or the classifier)."""
    try:
        meta = importlib.metadata.metadata(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    text = (meta.get("License") or "").strip()
    if text and len(text) <= 40 and "\n" not in text and not re.search(r"copyright|agreement", text, re.IGNORECASE):
        return text  # a name ("MIT", "Apache 2.0"), not the licence's whole text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    return ", ".join(classifiers) or (" ".join(text.split())[:60] + "..." if text else "not stated")


def check_dependency_licences(setup: Setup) -> Finding:
    names = sorted({p for _, p, _ in _requirements(setup) if p})
    if setup.packages is not None:
        names = sorted(set(names) | set(setup.packages))
    licences = {n: package_licence(n) for n in names}
    # BSL-1.0 is the Boost licence (permissive); the Business Source License is BUSL-1.1
    restricted = {n: l for n, l in licences.items() if re.search(r"busl|business source|sspl|proprietary", l, re.IGNORECASE)}
    evidence = [f"{n}: {l}" for n, l in licences.items() if l != "not installed"]
    evidence += [f"{n}: licence history: {h}" for n, h in LICENCE_HISTORY.items() if n in licences]
    return Finding("dependency", "licences", 1.0 - len(restricted) / max(len(licences), 1),
                   f"{len(restricted)} of {len(licences)} packages under a source-available or proprietary licence",
                   tuple(evidence), "" if not restricted else
                   f"replace or pin an open-source release of: {', '.join(restricted)}")


_SERVICES = {  # what a notebook's code does that needs someone else's server
    "Hugging Face Hub upload": r"push_to_hub|push_folder|upload_folder|upload_file",
    "Hugging Face Hub download": r"hf_hub_download|snapshot_download|load_dataset\(\s*['\"][\w.-]+/",
    "experiment tracker": r"wandb\.init|report_to\s*=\s*['\"](?:wandb|comet|mlflow|neptune)",
    "hosted model API": r"openai|anthropic|api\.together|inference_endpoint|InferenceClient",
    "package or code download": r"pip install|git clone",
    "web request": r"requests\.(?:get|post)|urllib\.request|httpx\.",
}


_STRING = re.compile(r"""'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*\"""", re.DOTALL)


def _code_only(source: str) -> str:
    """A cell's code without string literals and comments (a message that mentions `git clone` runs nothing);
    shell lines (`!git clone ...`, `%pip install ...`) are kept whole."""
    kept = []
    for line in source.splitlines():
        if line.lstrip().startswith(("!", "%")):
            kept.append(line)
        else:
            kept.append(_STRING.sub("''", line).split("#", 1)[0])
    return "\n".join(kept)


def check_dependency_services(setup: Setup) -> Finding:
    evidence, required = [], set()
    if _remote(setup.inference):
        required.add("remote inference")
        evidence.append(f"inference: {setup.inference}")
    for entry in setup.notebooks:
        cells = json.loads(_path(entry).read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            colab_only = "google.colab" in source
            code_only = _code_only(source)
            for service, pattern in _SERVICES.items():
                if re.search(pattern, code_only):
                    evidence.append(f"{Path(entry).name}, cell {i}: {service}" + (" (on Colab only)" if colab_only
                                                                                  else ""))
                    if not colab_only:
                        required.add(service)
    if not required:
        return Finding("dependency", "services", 1.0, "no external service is needed to run" +
                       (" (the Colab-only install cell aside)" if evidence else ""), tuple(evidence))
    return Finding("dependency", "services", 0.5 if "remote inference" not in required else 0.0,
                   f"external services in use: {', '.join(sorted(required))}", tuple(evidence),
                   "make each one optional and off by default, with a local alternative (files on disk, a local "
                   "runtime, a local tracker such as TensorBoard)")


def audit(setup: Setup, probe: Callable[[], bool] | None = None) -> Report:
    """Audit the setup: every check, in the order of the five dimensions. `probe` (e.g. `hub_reachable`) is called
    only when offline mode is off; without it the Hub is not probed."""
    findings = [
        check_data_location(setup), check_data_provenance(setup), check_data_network(setup),
        check_compute_location(setup), check_compute_network(setup, probe), check_compute_runtime(setup),
        check_model_source(setup), check_model_format(setup), check_model_licence(setup), check_model_code(setup),
        check_output_template(setup), check_output_control(setup),
        check_dependency_telemetry(setup), check_dependency_pins(setup), check_dependency_licences(setup),
        check_dependency_services(setup),
    ]
    return Report(setup, findings)


# ----------------------------------------------------------------------------------------------------- HTML page
_AUDIT_CSS = """
.scores td:nth-child(2) { font-weight: bold; } .finding { margin: 0.6rem 0 1rem 0; }
.finding .score { font-family: sans-serif; font-weight: bold; }
.evidence { font-size: 0.85rem; color: #333; margin: 0.2rem 0 0.2rem 1.2rem; }
.recommendation { border-left: 4px solid #b3401f; padding-left: 0.6rem; }
.answer { border-left: 4px solid #1f5fa8; padding-left: 0.6rem; }
"""
AUDIT_COLOURS = ("#1f5fa8", "#b3401f", "#2e7d32", "#6a1b9a", "#c9a227")


def scores_svg(reports: dict[str, dict[str, int]], width: int = 760) -> str:
    """A grouped bar chart (inline SVG) of the five dimensions' scores, one colour per audited setup."""
    left, top, group, bar = 110, 50, 22, 0
    names = list(reports)
    bar = max(8, 40 // max(len(names), 1))
    group = bar * len(names) + 14
    height = top + len(DIMENSIONS) * group + 70
    scale = (width - left - 40) / 100
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="sovereignty scores" font-family="sans-serif" font-size="12">',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
             "Sovereignty score per dimension (0 to 100, higher is more yours)</text>"]
    for i, dimension in enumerate(DIMENSIONS):
        y = top + i * group
        parts.append(f'<text x="{left - 8}" y="{y + group / 2}" text-anchor="end">{dimension}</text>')
        for j, name in enumerate(names):
            value = reports[name][dimension]
            colour = AUDIT_COLOURS[j % len(AUDIT_COLOURS)]
            parts.append(f'<rect x="{left}" y="{y + j * bar}" width="{value * scale:.1f}" height="{bar - 1}" '
                         f'fill="{colour}"><title>{escape(name)}: {value}</title></rect>')
            parts.append(f'<text x="{left + value * scale + 4:.1f}" y="{y + j * bar + bar - 2}" '
                         f'font-size="10">{value}</text>')
    axis = top + len(DIMENSIONS) * group
    parts.append(f'<line x1="{left}" y1="{axis}" x2="{left + 100 * scale}" y2="{axis}" stroke="#333"/>')
    for tick in range(0, 101, 25):
        parts.append(f'<text x="{left + tick * scale:.1f}" y="{axis + 14}" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{left + 50 * scale:.1f}" y="{axis + 30}" text-anchor="middle">score (out of 100)</text>')
    for j, name in enumerate(names):
        x = left + j * 180
        parts.append(f'<rect x="{x}" y="{axis + 42}" width="12" height="12" '
                     f'fill="{AUDIT_COLOURS[j % len(AUDIT_COLOURS)]}"/>')
        parts.append(f'<text x="{x + 18}" y="{axis + 52}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _report_body(report: Report, compare: dict[str, dict[str, int]] | None = None) -> str:
    scores = report.scores()
    rows = "".join(f"<tr><td>{d}</td><td>{scores[d]}</td></tr>" for d in DIMENSIONS)
    parts = [f'<p class="subtitle">Overall score <b class="overall">{report.overall()}/100</b>: the mean of the five '
             "dimensions, each the mean of its checks (1 = yours, 0 = someone else's).</p>",
             f'<table class="scores"><tr><th>dimension</th><th>score</th></tr>{rows}</table>',
             f'<div class="chart">{scores_svg(compare or {report.setup.name: scores})}</div>']
    answers = report.answers()
    for dimension in DIMENSIONS:
        parts.append(f'<h2 id="{dimension}">{dimension.capitalize()} <small>({scores[dimension]}/100)</small></h2>')
        for f in (f for f in report.findings if f.dimension == dimension):
            evidence = "".join(f'<li>{escape(x)}</li>' for x in f.evidence)
            parts.append(f'<div class="finding" data-check="{escape(f.check)}"><span class="score">{f.score:.2f}</span> '
                         f'<b>{escape(f.check)}</b>: {escape(f.finding)}<ul class="evidence">{evidence}</ul>'
                         + (f'<p class="recommendation">{escape(f.recommendation)}</p>' if f.recommendation and f.score < 1 else "")
                         + "</div>")
        for question, answer in answers[dimension]:
            parts.append(f'<p class="answer"><i>{escape(question)}</i> {escape(answer)}</p>')
    plan = "".join(f"<li><b>{d}</b>: " + ("nothing to change" if not steps else
                                          "<ul>" + "".join(f"<li>{escape(s)}</li>" for s in steps) + "</ul>") + "</li>"
                   for d, steps in report.plan().items())
    parts.append(f'<h2 id="plan">Plan: what to change to raise each score</h2><ul class="plan">{plan}</ul>')
    return "\n".join(parts)
