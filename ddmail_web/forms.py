"""Forms (Flask-WTF: every POST carries a CSRF token). Secrets are never re-displayed."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, Length, Optional, Regexp


class EmptyForm(FlaskForm):
    """A form with only the CSRF token (buttons such as logout)."""


class RegisterForm(FlaskForm):
    voucher = StringField("Voucher code", validators=[Optional(), Length(max=40)])


class LoginForm(FlaskForm):
    # Usernames are generated: lower-case letters and digits only (nothing else reaches the DB).
    user = StringField(
        "Username",
        validators=[DataRequired(), Regexp(r"^[a-z0-9]{1,32}\Z", message="Check the username.")],
        filters=[lambda value: value.strip() if isinstance(value, str) else value],
    )
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    key = FileField("Key file", validators=[FileRequired("Choose your key file.")])
    totp = StringField(
        "One-time code (if enabled)",
        validators=[Optional(), Regexp(r"^[0-9 ]{6,8}\Z", message="Six digits.")],
    )


class RevokeForm(FlaskForm):
    session = HiddenField(validators=[DataRequired(), Regexp(r"^[0-9]{1,9}\Z")])  # an INTEGER id


class KeyFileForm(FlaskForm):
    """Forms of reauthenticated routes derive from this: the key file comes again."""

    key = FileField("Key file", validators=[FileRequired("Choose your key file.")])


LOCAL_PART = Regexp(r"^[A-Za-z0-9._-]{1,64}\Z", message="Use letters, digits, dots, - and _.")


class AddMailboxForm(FlaskForm):
    local_part = StringField("Name", validators=[DataRequired(), LOCAL_PART])
    domain = SelectField("Domain", validators=[DataRequired()])


class MailboxPasswordForm(FlaskForm):
    mailbox = HiddenField(validators=[DataRequired(), Length(max=254)])
    current_password = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=200)]
    )


class MailboxResetForm(KeyFileForm):
    mailbox = HiddenField(validators=[DataRequired(), Length(max=254)])


class MailboxRemoveForm(KeyFileForm):
    mailbox = HiddenField(validators=[DataRequired(), Length(max=254)])
    confirm = BooleanField(
        "Yes, destroy this mailbox and all its mail",
        validators=[DataRequired("Tick the box to confirm.")],
    )


class AddAliasForm(FlaskForm):
    local_part = StringField("Name", validators=[DataRequired(), LOCAL_PART])
    domain = SelectField("Domain", validators=[DataRequired()])
    destination = SelectMultipleField(
        "Deliver to", validators=[DataRequired("Choose at least one mailbox.")]
    )


class RemoveAliasForm(KeyFileForm):
    alias = HiddenField(validators=[DataRequired(), Length(max=254)])


class DomainForm(FlaskForm):
    domain = StringField("Domain", validators=[DataRequired(), Length(max=253)])


class DomainRemoveForm(KeyFileForm):
    domain = HiddenField(validators=[DataRequired(), Length(max=253)])


class ConfirmDeleteForm(KeyFileForm):
    confirm = BooleanField(
        "Yes, delete my account, every mailbox and all mail",
        validators=[DataRequired("Tick the box to confirm.")],
    )


class RemoveUserForm(KeyFileForm):
    user = HiddenField(validators=[DataRequired(), Regexp(r"^[a-z0-9]{1,32}\Z")])


class TotpForm(FlaskForm):
    totp = StringField(
        "Code", validators=[DataRequired(), Regexp(r"^[0-9 ]{6,8}\Z", message="Six digits.")]
    )
    key = FileField("Key file", validators=[FileRequired("Choose your key file.")])


class VoucherForm(FlaskForm):
    code = StringField("Voucher code", validators=[DataRequired(), Length(max=40)])


# -- OpenPGP keys ---------------------------------------------------------------------------
FINGERPRINT = Regexp(
    r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})\Z",
    message="A fingerprint is 40 or 64 hexadecimal characters.",
)


class OpenPgpUploadForm(FlaskForm):
    public_key = FileField(
        "Public key file", validators=[FileRequired("Choose your OpenPGP public key file.")]
    )


class OpenPgpActivateForm(FlaskForm):
    mailbox = SelectField("Mailbox", validators=[DataRequired("Choose a mailbox.")])
    fingerprint = HiddenField(validators=[DataRequired(), FINGERPRINT])


class OpenPgpDeactivateForm(FlaskForm):
    mailbox = HiddenField(validators=[DataRequired(), Length(max=254)])


class OpenPgpRemoveForm(FlaskForm):
    fingerprint = HiddenField(validators=[DataRequired(), FINGERPRINT])
