"""The project: one ``mlprod.yaml`` declaring sources, prediction events and features."""
