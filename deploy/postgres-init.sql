-- MLflow's tracking store gets a database of its own; the prediction log and the routing
-- state live in POSTGRES_DB (mlprod). Run once, when the data volume is first created.
CREATE DATABASE mlflow OWNER mlprod;
