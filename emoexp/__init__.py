"""emoexp: emotion-recognition experiments on MLflow, Optuna and PyTorch.

Heavy libraries (torch, mlflow) are imported inside the functions that need them so that
``emoexp --help`` answers at once.
"""

import os as _os

__version__ = "0.1.0"

# A tracking server that restarts (an upgrade, a crash) must not fail a training: MLflow's client
# retries every HTTP call with exponential backoff. emoexp's defaults, where the user set none:
# 10 retries, sleeping min(120, 1 x 2^(k-1)) s before retry k >= 2 (urllib3; retry 1 at once), so
# 2+4+8+16+32+64+120+120+120 = 486 s: an outage of about 8 minutes is survived (MLflow's own
# defaults, 7 retries x factor 2, give 244 s). Each attempt waits at most 120 s for an answer.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",      # MLflow's upper limit
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}

# Quiet where nothing is long: MLflow draws a progress bar for every artifact download, however
# small (a checkpoint, a model folder: dozens per pipeline run). emoexp's artifacts are small;
# MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true brings the bars back. Training, data reading and
# video decoding keep their own bars.
QUIET_DEFAULTS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


# Nothing emoexp runs downloads: pretrained weights are local directories. Some libraries still
# reach for the Hugging Face Hub on their own: bitsandbytes (imported by peft) asks it for a CPU
# kernel, with a publisher trust check first, on CPUs with AVX512-BF16. Offline mode, where the
# user set none, keeps those lookups to the local cache. Read by huggingface_hub when it is first
# imported, so it is set here, before any of them.
OFFLINE_DEFAULTS = {"HF_HUB_OFFLINE": "1"}

# each of them only where the user set none
for _k, _v in {**HTTP_RETRY_DEFAULTS, **QUIET_DEFAULTS, **OFFLINE_DEFAULTS}.items():
    _os.environ.setdefault(_k, _v)


def survived_outage_s(max_retries: int | None = None, backoff_factor: int | None = None) -> float:
    """Seconds of server outage the client's retries span (backoff sleeps, jitter left out)."""
    n = int(_os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] if max_retries is None else max_retries)
    f = int(_os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] if backoff_factor is None else backoff_factor)
    return float(sum(min(120, f * 2 ** (k - 1)) for k in range(2, n + 1)))
