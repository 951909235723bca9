"""Data: video decoding and frame sampling, processing, datasets, packing.

`load_video` is the project's one video reader and `sample_indices` its one frame sampler (see `vamba.data.video`).
"""

from .video import VideoFrames, VideoReadError, frames_for_token_budget, load_video, resize_frames, sample_indices

__all__ = ["VideoFrames", "VideoReadError", "frames_for_token_budget", "load_video", "resize_frames", "sample_indices"]
