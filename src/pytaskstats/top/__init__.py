"""``taskstats top``: a live view of per-process CPU, waits and IO rates.

Sample -> model -> sink: :mod:`.sampler` reads the machine (the /proc task list,
one pipelined bulk query, the exit listener); :mod:`.model` turns samples into
rows (pure; :mod:`.frame` holds the values in and out, :mod:`.counters` what is
counted and derived, :mod:`.rows` how rows are built); :mod:`.view` filters,
groups and sorts them (pure); :mod:`.render` formats them as text and JSON (pure);
:mod:`.screen` (curses) and :mod:`.batch` (text or JSON lines) are the sinks;
:mod:`.systotals` derives the header's machine totals, :mod:`.cursor` keeps the
screen's selected row, :mod:`.actions` signals and renices it.
``--replay``: :mod:`.replay` reads taskstatsd's journal interval by interval in
place of the sampler, :mod:`.replayframe` turns an interval into the same frame,
:mod:`.replayscreen` browses them with the same view.
"""
