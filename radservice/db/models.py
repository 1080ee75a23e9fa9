"""Every table, imported in one place so metadata (and Alembic) sees them all."""

from radservice.audit.models import AuditEvent
from radservice.db.base import Base
from radservice.dictation.models import Dictation
from radservice.jobs.models import Job
from radservice.outbox.models import Delivery
from radservice.reports.models import Report, ReportVersion
from radservice.users.models import ApiToken, User
from radservice.worklist.models import Patient, Study

__all__ = ["ApiToken", "AuditEvent", "Base", "Delivery", "Dictation", "Job", "Patient", "Report", "ReportVersion",
           "Study", "User"]
