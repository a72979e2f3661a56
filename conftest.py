"""Test environment, set before anything is imported or any notebook kernel starts (kernels inherit it):
offline, the tiny profile, and every cache in a temporary folder instead of $HOME."""
import os
import tempfile

_cache = tempfile.mkdtemp(prefix="course-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["COURSE_PROFILE"] = "tiny"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
for var, sub in [("HF_HOME", "hf"), ("MPLCONFIGDIR", "matplotlib"), ("IPYTHONDIR", "ipython"),
                 ("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                 ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")]:
    os.environ[var] = os.path.join(_cache, sub)
