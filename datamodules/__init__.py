"""Video anomaly detection DataModules (imported as ``copra_bench.datamodules``)."""

from copra_bench.datamodules.base import TestSet, VADDataModule
from copra_bench.datamodules.cross_domain import CrossDomainDataModule
from copra_bench.datamodules.multi_source import MultiSourceDataModule
from copra_bench.datamodules.records import VideoRecord, intervals_to_gt
from copra_bench.datamodules.release import ReleaseDataModule
from copra_bench.datamodules.shanghaitech import ShanghaiTechDataModule
from copra_bench.datamodules.synthetic import (
    SyntheticShanghaiTechDataModule, SyntheticUCFCrimeDataModule, SyntheticXDViolenceDataModule,
)
from copra_bench.datamodules.ucf_crime import UCFCrimeDataModule
from copra_bench.datamodules.xd_violence import XDViolenceDataModule

__all__ = ["CrossDomainDataModule", "MultiSourceDataModule", "ReleaseDataModule", "ShanghaiTechDataModule",
           "SyntheticShanghaiTechDataModule", "SyntheticUCFCrimeDataModule", "SyntheticXDViolenceDataModule",
           "TestSet", "UCFCrimeDataModule", "VADDataModule", "VideoRecord", "XDViolenceDataModule",
           "intervals_to_gt"]
