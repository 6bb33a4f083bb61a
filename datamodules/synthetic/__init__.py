"""The embedded synthetic surveillance world (the default dataset: rendered videos with anomalies, no downloads).

Tiny procedurally rendered videos with normal walkers and frame-exact anomalies, written losslessly (``libx264rgb``,
crf 0) in the real release layouts, so that the real dataset readers read them exactly like the real releases.
Everything is a pure function of the :class:`SyntheticSpec`: the same spec gives identical decoded frames.
:func:`ensure_synthetic` caches a world under ``$COPRA_CACHE_DIR`` (or ``~/.cache/copra_bench``), keyed by the spec,
the layout and :data:`GENERATOR_VERSION`.

One job per module, in import order:

* :mod:`.scene`: camera domains (:data:`DOMAINS`), shapes, and the plan of a video's normal content;
* :mod:`.events`: the anomaly planners, one per UCF-Crime class;
* :mod:`.render`: compositing a plan into uint8 RGB frames;
* :mod:`.spec`: the :class:`SyntheticSpec` and the plan of every video it implies;
* :mod:`.writers`: lossless ``.mp4`` files and JPEG frame folders;
* :mod:`.layouts`: the UCF-Crime, XD-Violence and ShanghaiTech release layouts (:data:`LAYOUTS`);
* :mod:`.cache`: :func:`cache_path` and :func:`ensure_synthetic`;
* :mod:`.command`: ``copra_bench data synth`` (:func:`main_synth`);
* :mod:`.datamodules`, :mod:`.ucf_crime`: the DataModules that read a cached world through each real reader.
"""

from copra_bench.datamodules.synthetic.cache import cache_path, ensure_synthetic
from copra_bench.datamodules.synthetic.command import main_synth
from copra_bench.datamodules.synthetic.datamodules import (
    SyntheticShanghaiTechDataModule, SyntheticWorldMixin, SyntheticXDViolenceDataModule,
)
from copra_bench.datamodules.synthetic.layouts import (
    COMPLETE_MARKER, LAYOUTS, META_FILE, generate_shanghaitech, generate_ucf_crime, generate_xd_violence,
)
from copra_bench.datamodules.synthetic.scene import DOMAINS, DomainStyle
from copra_bench.datamodules.synthetic.spec import (
    GENERATOR_VERSION, UCF_CRIME_CLASSES, SyntheticSpec, SyntheticVideo, build_plan, plan_videos,
)
from copra_bench.datamodules.synthetic.ucf_crime import SyntheticUCFCrimeDataModule
from copra_bench.datamodules.synthetic.writers import write_frames, write_mp4

__all__ = [
    "COMPLETE_MARKER", "DOMAINS", "GENERATOR_VERSION", "LAYOUTS", "META_FILE", "UCF_CRIME_CLASSES", "DomainStyle",
    "SyntheticShanghaiTechDataModule", "SyntheticSpec", "SyntheticUCFCrimeDataModule", "SyntheticVideo",
    "SyntheticWorldMixin", "SyntheticXDViolenceDataModule", "build_plan", "cache_path", "ensure_synthetic",
    "generate_shanghaitech", "generate_ucf_crime", "generate_xd_violence", "main_synth", "plan_videos",
    "write_frames", "write_mp4",
]
