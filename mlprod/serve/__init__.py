"""Deploy: batch scoring, online features, the REST server and the prediction log."""
