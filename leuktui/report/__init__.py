"""The lab report: results tables, comparison figures, confusion matrices, ROC curves, ablation
tables, preprocessing examples and recorded submissions, written as Markdown, HTML and figures.

Nothing here is imported when the app or the command line starts: matplotlib and pandas load
only when a report is built (``leuktui.report.build``).
"""
