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
os.environ["COURSE_CHECKPOINT_DIR"] = os.path.join(_cache, "checkpoints")  # each test run trains from scratch
# OpenMP threads that spin while waiting slow bitsandbytes' CPU kernels badly on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for var, sub in [("HF_HOME", "hf"), ("MPLCONFIGDIR", "matplotlib"), ("IPYTHONDIR", "ipython"),
                 ("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                 ("JUPYTER_RUNTIME_DIR", "jupyter-runtime")]:
    os.environ[var] = os.path.join(_cache, sub)
