"""Video anomaly detection DataModules (imported as ``copra_bench.datamodules``)."""

from copra_bench.datamodules.base import TestSet, VADDataModule
from copra_bench.datamodules.cross_domain import CrossDomainDataModule
from copra_bench.datamodules.records import VideoRecord, intervals_to_gt
from copra_bench.datamodules.synthetic_ucf import SyntheticUCFCrimeDataModule
from copra_bench.datamodules.ucf_crime import UCFCrimeDataModule

__all__ = ["CrossDomainDataModule", "SyntheticUCFCrimeDataModule", "TestSet", "UCFCrimeDataModule",
           "VADDataModule", "VideoRecord", "intervals_to_gt"]
