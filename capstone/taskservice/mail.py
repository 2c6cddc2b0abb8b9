"""The welcome mail, sent over SMTP with a timeout (lesson 04: a relay that hangs must not hang us)."""

import smtplib
from email.message import EmailMessage

from .settings import Settings


def welcome_message(settings: Settings, email: str, idempotency_key: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = email
    message["Subject"] = "Welcome to Task Service"
    # A relay or a mail client that sees this id twice knows it is the same mail.
    message["X-Idempotency-Key"] = idempotency_key
    message.set_content("Your account is ready. Sign in with this address to manage your tasks.")
    return message


def send_mail(settings: Settings, message: EmailMessage) -> None:
    """Blocking (smtplib): callers run it in a thread, never on the event loop."""
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds) as smtp:
        smtp.send_message(message)
