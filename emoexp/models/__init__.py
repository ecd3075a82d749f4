"""Models: plain ``nn.Module``s behind one registry.

Each model module is imported here by name so its ``@register_model`` runs; add a new module to
this list (and an input to the factory in ``tests/test_models.py``) to register a model.
"""

from emoexp.models import audio, eeg, face, fusion, heads, video  # noqa: F401  (imported to register)
from emoexp.models.audio import AudioEncoder
from emoexp.models.eeg import EEGEncoder, EEGEncoderLSTM
from emoexp.models.face import FaceDenseNet, FaceSmallCNN
from emoexp.models.fusion import (
    ChannelAdapter,
    MultimodalNet,
    build_multimodal_net,
    encoder_state_dict,
    load_encoder_state,
)
from emoexp.models.heads import ClassifierHead
from emoexp.models.registry import create_model, list_models, register_model
from emoexp.models.video import VideoFramesEncoder

__all__ = [
    "AudioEncoder",
    "ChannelAdapter",
    "ClassifierHead",
    "EEGEncoder",
    "EEGEncoderLSTM",
    "FaceDenseNet",
    "FaceSmallCNN",
    "MultimodalNet",
    "build_multimodal_net",
    "create_model",
    "encoder_state_dict",
    "list_models",
    "load_encoder_state",
    "register_model",
    "VideoFramesEncoder",
]
