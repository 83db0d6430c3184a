"""Programs that drive and read SENT runs: the demo, the lab (config, runs, report, curves), the GPU check, the tiny
run, the launcher they share and the data they write. verl loads none of this; what it loads is `recipe.sent`.

    python -m recipe.drivers.demo        # make demo
    python -m recipe.drivers.lab         # the lab (configs/lab.yaml)
    python -m recipe.drivers.gpu_check   # make gpu-check
"""
