"""The pipeline's jobs and their schedules: weekly retraining, daily features, hourly materialization."""

from datetime import UTC

import dagster as dg

# Everything from raw tables to promotion, with the monitoring that compares the new version.
retraining_job = dg.define_asset_job(
    "retraining_job", selection=dg.AssetSelection.groups("features", "training", "index", "monitoring"),
    description="Raw tables to a checked, promoted index version; promotes only if every check passes.")

# The day's events into the feature tables and training examples (only the days that changed), and
# the new feature rows into the online store. `feast apply` is the retraining's: definitions do not
# change from day to day.
daily_features_job = dg.define_asset_job(
    "daily_features_job",
    selection=dg.AssetSelection.assets("raw_tables", "feature_tables", "training_examples",
                                       "online_features"),
    description="Extend the feature tables and training examples with the days whose events "
                "changed (the new day), and load the new rows into the online store.")

online_features_job = dg.define_asset_job(
    "online_features_job", selection=dg.AssetSelection.assets("online_features"),
    description="Load the online store with feature values newer than the last load.")


@dg.schedule(job=retraining_job, cron_schedule="0 3 * * 0", execution_timezone="UTC")
def retraining_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Retrain every Sunday at 03:00 UTC; a version that fails a check is not promoted."""
    return dg.RunRequest(run_key=f"retrain-{context.scheduled_execution_time:%Y-%m-%d}")


@dg.schedule(job=online_features_job, cron_schedule="0 * * * *", execution_timezone="UTC")
def online_features_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """`feast materialize-incremental` every hour, up to the scheduled time."""
    end = context.scheduled_execution_time.astimezone(UTC).isoformat()
    return dg.RunRequest(run_key=f"materialize-{end}", run_config={"ops": {"online_features": {
        "config": {"incremental": True, "end": end}}}})


@dg.schedule(job=daily_features_job, cron_schedule="0 1 * * *", execution_timezone="UTC")
def daily_features_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every day at 01:00 UTC: yesterday's events in, online store loaded up to the scheduled time."""
    end = context.scheduled_execution_time.astimezone(UTC).isoformat()
    return dg.RunRequest(run_key=f"features-{end}", run_config={"ops": {"online_features": {
        "config": {"incremental": True, "end": end}}}})
