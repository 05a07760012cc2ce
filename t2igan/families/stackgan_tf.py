"""StackGAN v1 as released in TensorFlow (hanzhanggit/StackGAN): generation from converted
checkpoints only (``t2igan convert stackgan-tf``). Training StackGAN is the ``stackgan`` task
(the StackGAN-Pytorch networks); this family has no training step of its own."""
from __future__ import annotations

from dataclasses import dataclass, field

from t2igan import T2IError
from t2igan.core.config import TrainConfig
from t2igan.families.base import Family
from t2igan.models import stackgan_tf


@dataclass
class StackGANTFRunConfig:
    """Nothing to configure: the networks come from a converted checkpoint."""

    task: str = "stackgan_tf"
    train: TrainConfig = field(default_factory=TrainConfig)  # read by `t2igan train` before it reaches fit (which refuses)


def fit(cfg):
    raise T2IError("task stackgan_tf: generation only (convert the official TensorFlow checkpoint with "
                   "`t2igan convert stackgan-tf`); to train StackGAN use task stackgan")


FAMILY = Family(
    name="stackgan_tf", title="StackGAN (TensorFlow release)", paper="Zhang et al., ICCV 2017",
    config=StackGANTFRunConfig, fit=fit,
    generators={"stackgan_tf_stage1": stackgan_tf.StageIGenerator, "stackgan_tf_stage2": stackgan_tf.StageIIGenerator},
    needs="a converted TensorFlow StackGAN checkpoint (t2igan convert stackgan-tf); generation only",
    titles={"stackgan_tf_stage1": "StackGAN stage I (TensorFlow release)",
            "stackgan_tf_stage2": "StackGAN stage II (TensorFlow release)"},
)
