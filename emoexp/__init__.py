"""emoexp: emotion-recognition experiments on MLflow, Optuna and PyTorch.

Heavy libraries (torch, mlflow) are imported inside the functions that need them so that
``emoexp --help`` answers at once.
"""

__version__ = "0.1.0"
