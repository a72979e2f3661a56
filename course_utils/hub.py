"""The Hugging Face Hub: the user's token (never printed, never saved) and a private-by-default push."""
from __future__ import annotations

import os
from pathlib import Path


class HubTokenError(RuntimeError):
    """A token was asked for and exists, but could not be read (e.g. the Colab notebook was not granted access)."""


def hub_token() -> str | None:
    """The user's Hugging Face token, if they gave one: the HF_TOKEN environment variable, or on Colab the notebook
    secret HF_TOKEN. None means "no token given" and nothing else: a secret that exists but this notebook may not
    read (or a read that timed out) is an error that says what to do. The token is only ever passed to the Hub
    client: never printed, never saved."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:  # not on Colab
        return None
    try:
        return userdata.get("HF_TOKEN") or None
    except userdata.SecretNotFoundError:
        return None
    except userdata.NotebookAccessError as error:
        raise HubTokenError("Colab has a secret HF_TOKEN, but this notebook may not read it: open the key icon "
                            "(Secrets) in Colab's left bar and switch on 'Notebook access' for HF_TOKEN, then run "
                            "this cell again") from error
    except userdata.TimeoutException as error:
        raise HubTokenError("reading the Colab secret HF_TOKEN timed out: run this cell again") from error


def push_folder(folder: str | Path, repo_id: str, token: str, private: bool = True,
                message: str = "Upload from the fine-tuning course") -> str:
    """Upload a folder (an adapter with its manifest, a merged model) to a Hub model repository, private unless
    told otherwise; returns the repository's address."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message)
    return f"https://huggingface.co/{repo_id}"
