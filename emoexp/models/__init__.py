"""Models: plain ``nn.Module``s behind one registry (:mod:`emoexp.models.registry`).

Each model module is imported here by name so its ``@register_model`` runs: a new module joins
this list, a new model in it needs only its decorator (with an example input, which puts it
under ``tests/test_contracts.py``).
"""

# imported to register (heavy libraries, transformers and peft, load inside the builders)
from emoexp.models import audio, eeg, eeg_llm, face, face_hf, fusion, heads, posture, speech, video  # noqa: F401
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
from emoexp.models.registry import (
    create_model,
    example_model,
    get_model,
    list_models,
    model_options,
    register_model,
)
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
    "example_model",
    "get_model",
    "list_models",
    "load_encoder_state",
    "model_options",
    "register_model",
    "VideoFramesEncoder",
]
