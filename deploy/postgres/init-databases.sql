-- Run once, when the PostgreSQL volume is first created: the platform's own stores beside
-- the source database (POSTGRES_DB, the stand-in for Supabase).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
