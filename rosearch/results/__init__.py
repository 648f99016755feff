"""The analysis of a search run: statistics, report, plots, snapshots. It only reads what the run recorded
(:mod:`rosearch.records`)."""
