"""The sovereignty audit on prepared setups whose answers are known: a pickle checkpoint, a Hub id with and without a
pinned revision, telemetry variables set and unset, data with and without provenance, a GGUF file present or not,
remote inference; then the report, its plan, and its page in a real headless browser."""
import json
import pickle
import re
from html.parser import HTMLParser

import pytest
import torch
from safetensors.torch import save_file

from course_utils import audit as A
from course_utils.audit import QUESTIONS, Setup, audit
from course_utils.export import export_gguf
from course_utils.paths import TINY_MODEL_DIR
from tests.browser import chromium, run_chromium, screenshot_has_colour

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def setup(**kwargs) -> Setup:
    """A setup on the bundled model with no requirements or notebooks, in an empty environment, unless told."""
    defaults = dict(name="test", model=str(TINY_MODEL_DIR), requirements=(), environment={})
    return Setup(**{**defaults, **kwargs})


# ----------------------------------------------------------------------------------------------------- model
def test_a_pickle_checkpoint_scores_zero_and_is_named(tmp_path):
    torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "pytorch_model.bin")  # torch's zip with data.pkl inside
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"weight": [0.0]}))
    save_file({"weight": torch.zeros(2, 2)}, tmp_path / "adapter.safetensors")
    finding = A.check_model_format(setup(checkpoints=(str(tmp_path),)))
    assert finding.score == 0
    pickled = [e for e in finding.evidence if "pickle (can run code" in e]
    assert len(pickled) == 2 and any("pytorch_model.bin" in e for e in pickled) and any("raw.pkl" in e for e in pickled)
    assert any("adapter.safetensors: safetensors" in e for e in finding.evidence)
    assert "safetensors" in finding.recommendation


def test_safetensors_only_scores_full():
    finding = A.check_model_format(setup())
    assert finding.score == 1 and finding.evidence == ("data/tiny_model/model.safetensors: safetensors, 9.6 MB",)


def test_is_pickle_reads_the_bytes_not_the_name(tmp_path):
    disguised = tmp_path / "weights.safetensors"
    disguised.write_bytes(pickle.dumps([1, 2, 3]))
    assert A.is_pickle(disguised)
    assert not A.is_pickle(TINY_MODEL_DIR / "model.safetensors")


@pytest.mark.parametrize("revision, score, word", [(None, 0.2, "floating"), ("main", 0.2, "floating"),
                                                    (COMMIT, 0.6, "pinned")])
def test_a_hub_id_is_floating_unless_pinned_to_a_commit(revision, score, word):
    finding = A.check_model_source(setup(model="someone/some-model", revision=revision))
    assert finding.score == score and word in finding.finding


def test_a_local_folder_is_the_best_source():
    assert A.check_model_source(setup()).score == 1


def test_hub_model_not_in_the_cache_cannot_be_inspected_offline():
    s = setup(model="someone/not-downloaded", environment={"HF_HUB_OFFLINE": "1"})
    assert A.check_model_format(s).score == 0.5
    assert A.check_model_code(s).score == 0.5


def test_licence_and_gating_come_from_the_course_record_for_a_hub_id():
    finding = A.check_model_licence(setup(model="meta-llama/Llama-3.2-1B"))
    assert "Llama 3.2 Community License" in finding.finding and "gated" in finding.finding
    assert finding.score == 0.5
    open_model = A.check_model_licence(setup(model="HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert open_model.score == 1 and "Apache-2.0" in open_model.finding


def test_licence_from_a_model_card_front_matter(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a model\n")
    assert A.check_model_licence(setup(model=str(tmp_path))).score == 1
    (tmp_path / "README.md").write_text("---\nlicense: llama3.2\nextra_gated_prompt: accept\n---\n")
    assert A.check_model_licence(setup(model=str(tmp_path))).score == 0.5
    (tmp_path / "README.md").write_text("# no licence here\n")
    assert A.check_model_licence(setup(model=str(tmp_path))).score == 0


def test_remote_code_is_found_in_the_config(tmp_path):
    config = json.loads((TINY_MODEL_DIR / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    (tmp_path / "modeling_x.py").write_text("class XModel: ...\n")
    finding = A.check_model_code(setup(model=str(tmp_path)))
    assert finding.score == 0 and "trust_remote_code=True" in finding.finding
    assert A.check_model_code(setup()).score == 1


# ----------------------------------------------------------------------------------------------------- data
def test_data_without_provenance_scores_zero(tmp_path):
    (tmp_path / "corpus.txt").write_text("Some text of unknown origin.\n")
    finding = A.check_data_provenance(setup(data=(str(tmp_path),)))
    assert finding.score == 0 and "no provenance record" in finding.evidence[0]


def test_data_with_a_hashed_provenance_record_scores_full(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("Some public-domain text.\n")
    digest = A.file_sha256(data)
    (tmp_path / "PROVENANCE.md").write_text(f"| corpus.txt | {digest} |\nLicence: public domain.\n")
    assert A.check_data_provenance(setup(data=(str(tmp_path),))).score == 1
    (tmp_path / "PROVENANCE.md").write_text("Licence: public domain (no checksums).\n")
    assert A.check_data_provenance(setup(data=(str(tmp_path),))).score == 0.5


def test_the_course_data_is_hashed_in_its_provenance_files():
    finding = A.check_data_provenance(setup(data=("data/hemingway",)))
    assert finding.score == 1 and len(finding.evidence) == 3


def test_a_hub_dataset_would_be_fetched():
    s = setup(data=("tatsu-lab/alpaca",), environment={"HF_HUB_OFFLINE": "1"})
    assert A.check_data_location(s).score == 0
    network = A.check_data_network(s)
    assert network.score == 0 and "tatsu-lab/alpaca" in network.evidence[-1]


# ----------------------------------------------------------------------------------------------------- compute
def test_the_hub_is_not_probed_in_offline_mode():
    def probe():
        raise AssertionError("the probe must not run in offline mode")

    finding = A.check_compute_network(setup(environment={"HF_HUB_OFFLINE": "1"}), probe)
    assert finding.score == 1 and "not probed" in finding.evidence[1]


def test_the_probe_answers_when_offline_mode_is_off():
    calls = []
    finding = A.check_compute_network(setup(), lambda: calls.append(1) or True)
    assert calls == [1] and finding.score == 0.5 and "reachable" in finding.evidence[1]
    assert "not probed" in A.check_compute_network(setup()).evidence[1]


def test_gguf_present_or_not(tmp_path):
    assert A.check_compute_runtime(setup()).score == 0
    assert A.check_compute_runtime(setup(gguf=str(tmp_path / "missing.gguf"))).score == 0
    path = export_gguf(TINY_MODEL_DIR, tmp_path / "tiny.q8_0.gguf", "q8_0")
    finding = A.check_compute_runtime(setup(gguf=str(path)))
    assert finding.score == 1 and "38 tensors, architecture llama" in finding.evidence[0]


def test_remote_inference_loses_compute_and_output():
    s = setup(inference="https://api.example.com/v1/chat")
    assert A.check_compute_location(s).score == 0.5
    assert A.check_output_template(s).score == 0 and A.check_output_control(s).score == 0


# ----------------------------------------------------------------------------------------------------- output
def test_a_template_with_its_own_system_prompt_is_found(tmp_path):
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((TINY_MODEL_DIR / name).read_bytes())
    (tmp_path / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant made by X."
        "<|im_end|>\n{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    finding = A.check_output_template(setup(model=str(tmp_path)))
    assert finding.score == 0.7 and "You are a helpful assistant made by X." in finding.evidence[0]
    assert A.check_output_template(setup()).score == 1


def test_output_control_is_yours_with_a_local_template_and_not_without_one(tmp_path):
    (tmp_path / "config.json").write_bytes((TINY_MODEL_DIR / "config.json").read_bytes())
    assert A.check_output_control(setup(model=str(tmp_path))).score == 0.5  # no template file at all
    (tmp_path / "chat_template.jinja").write_bytes((TINY_MODEL_DIR / "chat_template.jinja").read_bytes())
    finding = A.check_output_control(setup(model=str(tmp_path)))
    assert finding.score == 1 and finding.evidence == (f"{tmp_path}/chat_template.jinja: writable by you",)


# ----------------------------------------------------------------------------------------------------- dependency
PACKAGES = {"huggingface_hub": "1.33.0", "trl": "1.14.0", "gradio": "6.31.0", "unsloth": "2026.10.9",
            "wandb": "0.31.0"}


def telemetry_states(environment: dict) -> dict[str, bool]:
    finding = A.check_dependency_telemetry(setup(environment=environment, packages=PACKAGES))
    return {line.split(" ")[0]: ": ON;" in line for line in finding.evidence}


def test_telemetry_is_on_with_no_variable_set():
    assert telemetry_states({}) == dict.fromkeys(PACKAGES, True)
    assert A.check_dependency_telemetry(setup(packages=PACKAGES)).score == 0


def test_hugging_face_switch_does_not_stop_gradio_or_wandb():
    states = telemetry_states({"HF_HUB_DISABLE_TELEMETRY": "1"})
    assert states == {"huggingface_hub": False, "trl": False, "gradio": True, "unsloth": True, "wandb": True}


def test_each_package_has_its_own_switch():
    states = telemetry_states({"GRADIO_ANALYTICS_ENABLED": "False", "UNSLOTH_DISABLE_STATISTICS": "0",
                               "WANDB_MODE": "disabled", "DO_NOT_TRACK": "1"})
    assert not any(states.values())  # UNSLOTH_DISABLE_STATISTICS works by being set, even to 0


def test_wandb_disabled_is_not_read_by_these_versions():
    assert telemetry_states({"WANDB_DISABLED": "true"})["wandb"] is True


def test_offline_mode_stops_the_hugging_face_callers():
    states = telemetry_states({"HF_HUB_OFFLINE": "1"})
    assert states == {"huggingface_hub": False, "trl": False, "gradio": True, "unsloth": False, "wandb": True}


def test_the_evidence_points_at_the_installed_source():
    finding = A.check_dependency_telemetry(setup())  # this environment's packages
    trl_line = next(e for e in finding.evidence if e.startswith("trl "))
    where = re.search(r"\[(trl/trainer/base_trainer\.py):(\d+)\]", trl_line)
    assert where, trl_line
    source = A.importlib.metadata.distribution("trl").locate_file(where.group(1)).read_text().splitlines()
    assert "send_telemetry(" in source[int(where.group(2)) - 1]


def test_floating_requirements_are_counted(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("transformers\ntorch>=2.0\npeft==0.21.2  # pinned\n\n# a comment\n")
    finding = A.check_dependency_pins(setup(requirements=(str(requirements),)))
    assert finding.score == pytest.approx(1 / 3) and "2 floating" in finding.finding


def test_the_course_requirements_are_pinned_and_installed():
    assert A.check_dependency_pins(setup(requirements=("requirements.txt",))).score == 1


def test_licences_flag_source_available_but_not_boost():
    assert A.check_dependency_licences(setup(requirements=("requirements.txt",))).score == 1  # torch names BSL-1.0
    mergekit = [e for e in A.check_dependency_licences(setup(requirements=("requirements.txt",))).evidence
                if e.startswith("mergekit")]
    assert mergekit[0] == "mergekit: LGPL-3.0-only" and "Business Source License" in mergekit[1]


def test_services_in_a_notebook_are_found(tmp_path):
    notebook = {"cells": [
        {"cell_type": "code", "source": ["import sys\n", "if 'google.colab' in sys.modules:\n", "  !pip install x"]},
        {"cell_type": "code", "source": "model.push_to_hub('me/model')"},
        {"cell_type": "markdown", "source": "wandb.init() in prose does not count"}]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook))
    finding = A.check_dependency_services(setup(notebooks=(str(path),)))
    assert finding.score == 0.5 and finding.evidence == ("nb.ipynb, cell 0: package or code download (on Colab only)",
                                                         "nb.ipynb, cell 1: Hugging Face Hub upload")


# ----------------------------------------------------------------------------------------------------- report
def owned_and_rented(tmp_path):
    gguf = export_gguf(TINY_MODEL_DIR, tmp_path / "tiny.q8_0.gguf", "q8_0")
    owned = setup(name="owned", gguf=str(gguf), data=("data/hemingway",), requirements=("requirements.txt",),
                  environment={"HF_HUB_OFFLINE": "1"}, answers={"data_access": "only me"})
    checkpoint = tmp_path / "rented" / "pytorch_model.bin"
    checkpoint.parent.mkdir()
    torch.save({"w": torch.zeros(1)}, checkpoint)
    rented = setup(name="rented", model="meta-llama/Llama-3.1-8B-Instruct", checkpoints=(str(checkpoint),),
                   data=("tatsu-lab/alpaca",), training="a rented cloud GPU", inference="https://api.example.com/v1",
                   packages=PACKAGES)
    return audit(owned), audit(rented)


def test_the_owned_setup_scores_higher_in_every_dimension(tmp_path):
    owned, rented = owned_and_rented(tmp_path)
    assert all(owned.scores()[d] > rented.scores()[d] for d in A.DIMENSIONS), (owned.scores(), rented.scores())
    assert owned.overall() >= 90 and rented.overall() <= 40


def test_plan_lists_what_to_change_and_the_unanswered_questions(tmp_path):
    owned, rented = owned_and_rented(tmp_path)
    plan = rented.plan()
    assert any(step.startswith("format: convert them to safetensors") for step in plan["model"])
    assert any("HF_HUB_DISABLE_TELEMETRY" in step or "GRADIO" in step for step in plan["dependency"])
    unanswered = [s for steps in owned.plan().values() for s in steps if s.startswith("answer: ")]
    assert len(unanswered) == len(QUESTIONS) - 1  # data_access was answered
    markdown = owned.to_markdown()
    assert "*Who can read the training data (people, services, backups)?* only me" in markdown
    assert f"Overall score: **{owned.overall()}/100**" in markdown


class _Sections(HTMLParser):
    """The headings, the score table's cells and the findings' check names from the DOM Chromium dumps."""

    def __init__(self):
        super().__init__()
        self.h2, self.cells, self.checks, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "td"):
            self._in = tag
            (self.h2 if tag == "h2" else self.cells).append("")
        if "data-check" in attrs:
            self.checks.append(attrs["data-check"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.h2[-1] += data
        elif self._in == "td":
            self.cells[-1] += data


def test_report_page_is_self_contained_and_escaped(tmp_path):
    owned, _ = owned_and_rented(tmp_path)
    owned.setup.answers["output_control"] = "<script>alert(1)</script>"
    page = owned.to_html()
    assert not re.search(r"""(?:src|href)\s*=|<link|<script|@import|url\(""", page, re.IGNORECASE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "default-src 'none'" in page


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install -y chromium); "
                                               "the browser rendering of the audit report is not checked")
def test_report_page_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    owned, rented = owned_and_rented(tmp_path)
    paths = owned.write(tmp_path / "report", compare={"owned": owned.scores(), "rented": rented.scores()})
    assert paths["markdown"].read_text().startswith("# Sovereignty audit: owned")
    url = paths["html"].resolve().as_uri()
    dom = run_chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Sections()
    parsed.feed(dom.stdout)
    assert [h.split(" (")[0] for h in parsed.h2] == ["Data", "Compute", "Model", "Output", "Dependency",
                                                     "Plan: what to change to raise each score"]
    scores = owned.scores()
    assert parsed.cells == [x for d in A.DIMENSIONS for x in (d, str(scores[d]))]
    assert parsed.checks == [f.check for f in owned.findings]

    shot = tmp_path / "audit.png"
    result = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    pixels, (width, height) = image.load(), image.size
    for colour in A.AUDIT_COLOURS[:2]:  # the chart's bars of both setups are drawn
        assert screenshot_has_colour(pixels, colour, range(0, width, 4), height), colour


# ----------------------------------------------------------------------------------------------------- saved as JSON
def test_a_setup_goes_to_json_and_back(tmp_path):
    original = setup(name="mine", data=("data/hemingway", "tatsu-lab/alpaca"), environment={"HF_HUB_OFFLINE": "1"},
                     packages={"trl": "1.14.0"}, answers={"data_access": "only me"})
    path = tmp_path / "setup.json"
    path.write_text(json.dumps(original.to_dict()))
    again = Setup.from_dict(json.loads(path.read_text()))
    assert again == original and again.data == ("data/hemingway", "tatsu-lab/alpaca")
    assert again.unanswered() == [k for k in QUESTIONS if k != "data_access"]


@pytest.mark.parametrize("values, message", [
    ({"model": "x"}, "'name' must be a non-empty string"),
    ({"name": "a", "model": "x", "dataset": ["d"]}, "unknown field(s) 'dataset'; a Setup has: name, model"),
    ({"name": "a", "model": "x", "data": "data/hemingway"}, "'data' must be a list of non-empty strings"),
    ({"name": "a", "model": "x", "data": [""]}, "'data' must be a list of non-empty strings"),
    ({"name": "a", "model": "x", "environment": {"HF_HUB_OFFLINE": 1}}, "'environment' must be a dict of strings"),
    ({"name": "a", "model": "x", "answers": None}, "'answers' must be a dict of strings to strings, not None"),
    ({"name": "a", "model": "x", "answers": {"data_acess": "me"}}, "answers to no question: 'data_acess'"),
    ({"name": "a", "model": "x", "inference": None}, "'inference' must be a string, not None"),
    (["name", "model"], "a setup is a dict of Setup's fields, not list"),
])
def test_a_bad_setup_dict_is_an_error_that_names_the_field(values, message):
    with pytest.raises(ValueError) as error:
        Setup.from_dict(values)
    assert message in str(error.value)


def test_a_saved_report_is_compared_with_a_new_audit(tmp_path):
    report = audit(setup(data=("data/hemingway",), environment={"HF_HUB_OFFLINE": "1"}))
    paths = report.write(tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["setup"] == report.setup.to_dict() and saved["overall"] == report.overall()
    assert A.report_differences(saved, report) == []
    saved["findings"][0]["score"] = 1.0 if saved["findings"][0]["score"] < 1 else 0.0
    saved["overall"] += 1
    differences = A.report_differences(saved, report)
    assert len(differences) == 2 and differences[0].startswith("data/location: saved")
    assert differences[1].startswith("overall: saved")
    del saved["findings"][1]
    assert "data/provenance: missing from the saved report" in A.report_differences(saved, report)
    assert A.report_differences({"findings": "none"}, report) == [
        "the saved report is not a report (a dict with a list of findings)"]


def test_changes_between_two_audits_and_the_failing_findings():
    before = audit(setup(requirements=(), environment={}, packages={"trl": "1.14.0"}))
    after = audit(setup(requirements=(), environment={"HF_HUB_OFFLINE": "1"}, packages={"trl": "1.14.0"}))
    assert A.changes(before, after) == {"data/network": (0.8, 1.0), "compute/network": (0.5, 1.0),
                                        "dependency/telemetry": (0.0, 1.0)}
    assert A.changes(after, after) == {}
    assert {f.key for f in before.failing()} >= {"data/network", "compute/network", "dependency/pins"}
    assert all(f.score < 1 for f in before.failing()) and before.by_key()["model/format"].score == 1


def test_local_paths_are_what_the_audit_reads(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("text")
    paths = A.local_paths(setup(data=(str(data), "tatsu-lab/alpaca"), requirements=("requirements.txt",),
                                checkpoints=(str(tmp_path / "missing.bin"),)))
    assert paths == [TINY_MODEL_DIR, data, A.REPO_ROOT / "requirements.txt"]
