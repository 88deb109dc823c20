"""The pipeline's jobs and their schedules: weekly retraining, hourly incremental materialization."""

from datetime import UTC

import dagster as dg

# Everything from raw tables to promotion, with the monitoring that compares the new version.
retraining_job = dg.define_asset_job(
    "retraining_job", selection=dg.AssetSelection.groups("features", "training", "index", "monitoring"),
    description="Raw tables to a checked, promoted index version; promotes only if every check passes.")

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
