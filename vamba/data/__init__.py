"""Data: frame specs and video decoding, processing, datasets, packing.

`load_video` is the project's one video reader and `FrameSpec` its one frame setting (`vamba.data.video`,
`vamba.data.frames`); `sample_indices` is the frame sampler behind it.
"""

from .frames import FrameSpec, Sampling, frames_for_token_budget, sample_indices
from .video import VideoFrames, VideoReadError, load_video, resize_frames

__all__ = ["FrameSpec", "Sampling", "VideoFrames", "VideoReadError", "frames_for_token_budget", "load_video",
           "resize_frames", "sample_indices"]
