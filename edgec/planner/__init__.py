"""The planner: which configurations to try, each one tried and judged, and the choice.

- `search`: the configurations a spec allows, cheapest first; `choose`; the summary
  when none holds every budget.
- `samples`: the samples read or drawn, split into calibration and accuracy halves, and
  run through a model in the batches it takes.
- `evaluate`: one configuration tried: passes, export, backend build, latency, accuracy.
- `budgets`: each budget judged against one candidate's figures; the exit-4 diagnostic.
- `plan`: the search loop and the choice, the chosen candidate's files kept.
- `costmodel`: latency estimated from a target description when it cannot be measured.

`edgec.compiler` calls `plan.make_plan`; `edgec.manifest` writes the artifact's records
from the `Plan` it returns.
"""
