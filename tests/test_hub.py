"""The Hub: a token only from the user (and a Colab secret that exists but may not be read is an error, not "no
token"), and pushes that are private unless told otherwise. No network: stand-ins for HfApi and google.colab."""
import sys
import types

import pytest

from course_utils import hub


class FakeHubApi:
    """Records what push_folder asks the Hub for."""
    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("token", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_is_private_unless_told_otherwise(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHubApi)
    FakeHubApi.calls = []
    url = hub.push_folder(tmp_path, "someone/hemingway-lora", token="hf_fake")
    assert url == "https://huggingface.co/someone/hemingway-lora"
    (_, token), (_, repo, create), (_, upload) = FakeHubApi.calls
    assert token == "hf_fake" and repo == "someone/hemingway-lora" and create["private"] is True
    assert upload["folder_path"] == str(tmp_path) and upload["repo_id"] == "someone/hemingway-lora"
    FakeHubApi.calls = []
    hub.push_folder(tmp_path, "someone/public-lora", token="hf_fake", private=False)
    assert FakeHubApi.calls[1][2]["private"] is False


def fake_colab(monkeypatch, outcome: str) -> None:
    """A stand-in for google.colab.userdata whose get() returns a secret or raises as Colab's does."""
    userdata = types.ModuleType("google.colab.userdata")
    for name in ("SecretNotFoundError", "NotebookAccessError", "TimeoutException"):
        setattr(userdata, name, type(name, (Exception,), {}))

    def get(key):
        assert key == "HF_TOKEN"
        if outcome == "secret":
            return "hf_from_colab"
        raise getattr(userdata, outcome)(key)

    userdata.get = get
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)


def test_token_comes_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    fake_colab(monkeypatch, "secret")
    assert hub.hub_token() == "hf_from_env"


def test_no_token_anywhere_means_none(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert hub.hub_token() is None  # not on Colab
    fake_colab(monkeypatch, "SecretNotFoundError")
    assert hub.hub_token() is None  # on Colab, no such secret


def test_a_colab_secret_is_read(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake_colab(monkeypatch, "secret")
    assert hub.hub_token() == "hf_from_colab"


@pytest.mark.parametrize("outcome, message", [("NotebookAccessError", "Notebook access"),
                                              ("TimeoutException", "timed out")])
def test_a_secret_that_cannot_be_read_is_an_error_not_no_token(monkeypatch, outcome, message):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake_colab(monkeypatch, outcome)
    with pytest.raises(hub.HubTokenError, match=message):
        hub.hub_token()
