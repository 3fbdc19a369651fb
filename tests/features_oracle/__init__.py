"""Independent oracle of the 150-feature catalog (shared/FEATURES.md), in numpy/pandas.

Written from the catalog text only; it never runs the SQL under test. NULL is represented as NaN here
(the SQL side never produces NaN, so the NULL patterns compare one to one).
"""
