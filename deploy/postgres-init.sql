-- Run once by the postgres image on an empty volume: one database per system, one owner.
-- twotower (POSTGRES_DB) holds the model/index registry; feast the Feast SQL registry; dagster
-- Dagster's runs, event logs and schedules.
CREATE DATABASE feast OWNER twotower;
CREATE DATABASE dagster OWNER twotower;
