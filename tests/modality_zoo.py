"""Small models of every modality, with random weights: audio (a 1-D CNN in the AudioMNIST style, Wav2Vec2, HuBERT,
WavLM, AST, Whisper), time series (PatchTST), video (torchvision's r3d_18, mc3_18, r2plus1d_18, swin3d_t; VideoMAE,
TimeSformer, ViViT) and volumes (a 3-D CNN). Each entry builds (model, one input sample [1, ...]); configs are tiny so a
compile takes seconds. Hugging Face and torchvision models are built from their own classes and configs."""
from __future__ import annotations

import torch
from torch import nn


class AudioCNN(nn.Module):
    """AudioMNIST-style waveform classifier (Becker et al.): Conv1d / MaxPool1d / AvgPool1d stacks on [B, 1, T]."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 9, stride=2, padding=4), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(3, 2, 1),
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AvgPool1d(2),
            nn.Conv1d(16, 16, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.AdaptiveMaxPool1d(8))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class VolumeCNN(nn.Module):
    """A 3-D CNN for volumes [B, 1, D, H, W] (MRI-style): Conv3d, BatchNorm3d, MaxPool3d, AvgPool3d, an
    upsampled skip, AdaptiveMaxPool3d."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d(2))
        self.block = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(), nn.AvgPool3d(2))
        self.up = nn.Upsample(scale_factor=2, mode="trilinear")
        self.head = nn.Sequential(nn.AdaptiveMaxPool3d(2), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        h = self.stem(x)
        return self.head(h + self.up(self.block(h)))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics, so folding and the affine rules see more than the identity."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model


def audio_cnn():
    return AudioCNN(), torch.randn(1, 1, 256)


def volume_cnn():
    return VolumeCNN(), torch.randn(1, 1, 8, 8, 8)


def _torchvision_video(name: str):
    def build():
        from torchvision.models import video
        return getattr(video, name)(num_classes=4), torch.randn(1, 3, 4, 32, 32)
    return build


def swin3d_t():
    """torchvision's Swin3D-T layout (depths 2-2-6-2, stochastic depth 0.1) at a quarter of its width, with
    windows that fit a 4x32x32 clip."""
    from torchvision.models.video.swin_transformer import SwinTransformer3d
    model = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=24, depths=[2, 2, 6, 2], num_heads=[1, 2, 4, 8],
                              window_size=[2, 4, 4], stochastic_depth_prob=0.1, num_classes=4)
    return model, torch.randn(1, 3, 4, 32, 32)


def patchtst():
    from transformers import PatchTSTConfig, PatchTSTForClassification
    config = PatchTSTConfig(num_input_channels=3, context_length=32, patch_length=8, patch_stride=4, d_model=16,
                            num_attention_heads=2, num_hidden_layers=2, ffn_dim=32, num_targets=4)
    return PatchTSTForClassification(config), torch.randn(1, 32, 3)


def videomae():
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification
    config = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_labels=3)
    return VideoMAEForVideoClassification(config), torch.randn(1, 4, 3, 32, 32)


def timesformer():
    from transformers import TimesformerConfig, TimesformerForVideoClassification
    config = TimesformerConfig(image_size=32, patch_size=16, num_frames=4, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=37, num_labels=3)
    return TimesformerForVideoClassification(config), torch.randn(1, 4, 3, 32, 32)


_SPEECH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
               conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=2, num_labels=4, classifier_proj_size=16, mask_time_prob=0.0)


def wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification
    return Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**_SPEECH)), torch.randn(1, 400)


def hubert():
    from transformers import HubertConfig, HubertForSequenceClassification
    return HubertForSequenceClassification(HubertConfig(**_SPEECH)), torch.randn(1, 400)


def wavlm():
    from transformers import WavLMConfig, WavLMForSequenceClassification
    return WavLMForSequenceClassification(WavLMConfig(**_SPEECH, num_buckets=16, max_bucket_distance=32)), \
        torch.randn(1, 400)


def vivit():
    from transformers import VivitConfig, VivitForVideoClassification
    config = VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 16, 16], hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=37, num_labels=3)
    return VivitForVideoClassification(config), torch.randn(1, 4, 3, 32, 32)


def ast():
    from transformers import ASTConfig, ASTForAudioClassification
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       patch_size=8, frequency_stride=8, time_stride=8, max_length=32, num_mel_bins=16,
                       num_labels=4)
    return ASTForAudioClassification(config), torch.randn(1, 32, 16)


def whisper():
    from transformers import WhisperConfig, WhisperForAudioClassification
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37,
                           num_mel_bins=16, max_source_positions=16, num_labels=4, decoder_layers=1,
                           decoder_attention_heads=2, decoder_ffn_dim=37, classifier_proj_size=16)
    return WhisperForAudioClassification(config), torch.randn(1, 16, 32)


# name -> (modality, builder)
ZOO = {
    "audio_cnn1d": ("audio", audio_cnn), "wav2vec2": ("audio", wav2vec2), "hubert": ("audio", hubert),
    "wavlm": ("audio", wavlm), "vivit": ("video", vivit),
    "ast": ("spectrogram", ast), "whisper": ("spectrogram", whisper),
    "patchtst": ("timeseries", patchtst),
    "r3d_18": ("video", _torchvision_video("r3d_18")), "mc3_18": ("video", _torchvision_video("mc3_18")),
    "r2plus1d_18": ("video", _torchvision_video("r2plus1d_18")), "swin3d_t": ("video", swin3d_t),
    "videomae": ("video", videomae), "timesformer": ("video", timesformer),
    "volume_cnn3d": ("volume", volume_cnn),
}
SLOW = {"swin3d_t", "r3d_18", "mc3_18", "r2plus1d_18"}


def build(name: str, seed: int = 0):
    """(model in eval mode, float64, one input sample [1, ...] float64), seeded."""
    torch.manual_seed(seed)
    model, x = ZOO[name][1]()
    return _randomize(model, seed).double().eval(), x.double()
