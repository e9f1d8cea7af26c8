"""The campaign report.

    data.py    ReportData and its parts (plain dataclasses); collect(store) assembles them
    render.py  write_report(data, out_dir): hull.json, CIFs, report.md, report.html
    plots.py   the figures (PNG bytes)
    export.py  export_run(store, out_dir): potentials, training set, structures, ASE database

Typical use: ``write_report(collect(store), out)`` and ``export_run(store, out)``.
"""

from csp.report.data import (DEFAULT_WITHIN, STAGES, AuditPoint, CandidateRecord, Counts, EvolutionData, Failure,
                             LearningRound, ReportData, SkippedSurvivor, StageCounts, StageSummary, collect)
from csp.report.export import export_run
from csp.report.render import SCHEMA, SYMPREC, space_group, write_cif, write_report

__all__ = ["DEFAULT_WITHIN", "STAGES", "SCHEMA", "SYMPREC", "AuditPoint", "CandidateRecord", "Counts",
           "EvolutionData", "Failure", "LearningRound", "ReportData", "SkippedSurvivor", "StageCounts",
           "StageSummary", "collect", "export_run", "space_group", "write_cif", "write_report"]
