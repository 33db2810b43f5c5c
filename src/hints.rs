//! The setup step behind each known failure.
//!
//! Error answers and log lines end with one of these hints, and README's troubleshooting table
//! lists the same texts (a test keeps the two in step), so an operator paged at night reads
//! the same advice in the log, in the caller's error and in the documentation.

/// Google STS says the audience names no usable provider.
pub const PROVIDER: &str =
    "the credential configuration's audience must name an existing, enabled \
    workload identity pool provider (gcloud iam workload-identity-pools providers describe); a \
    disabled or deleted pool or provider fails the same way";

/// The provider's attribute condition refused the broker's role.
pub const ATTRIBUTE_CONDITION: &str = "the provider's attribute condition rejected the broker's \
    role; compare the condition with the stack output GoogleAwsRoleAttribute";

/// AWS said the session token inside the subject token had expired.
pub const AWS_EXPIRED: &str = "the broker's AWS credentials expired before Google verified them; \
    check that their source refreshes them (on Lambda a new execution environment does)";

/// AWS did not accept the subject token's signature.
pub const AWS_SIGNATURE: &str = "AWS rejected the subject token's signature; check the broker's \
    clock and that AWS_REGION matches the region of regional_cred_verification_url";

/// Google could not verify the AWS identity for another reason.
pub const AWS_IDENTITY: &str = "Google could not verify the broker's AWS identity; check that the \
    provider's AWS account id is the broker's account and that its AWS credentials are valid";

/// The credential configuration itself is off.
pub const CONFIG: &str = "regenerate the credential configuration with \
    gcloud iam workload-identity-pools create-cred-config --aws";

/// The broker's role may not impersonate the service account.
pub const BINDING: &str = "grant roles/iam.workloadIdentityUser on the service account to the \
    broker's role (principalSet://iam.googleapis.com/projects/NUMBER/locations/global/\
    workloadIdentityPools/POOL/attribute.aws_role/ROLE); new bindings take a few minutes";

/// A lifetime over an hour without the org policy.
pub const LIFETIME: &str = "lifetimes over 3600 s need the org policy \
    constraints/iam.allowServiceAccountCredentialLifetimeExtension; grant it or lower \
    BROKER_MAX_LIFETIME_SECONDS";

/// A scope IAM Credentials does not know.
pub const SCOPE: &str = "a scope in BROKER_SCOPES is not a valid OAuth scope; fix BROKER_SCOPES";

/// The service account does not exist.
pub const SERVICE_ACCOUNT: &str =
    "the service account in service_account_impersonation_url does not exist";

/// IAM Credentials refused the federated token.
pub const FEDERATED_TOKEN: &str = "IAM Credentials refused the federated token; check the STS \
    stage and the provider's google.subject attribute mapping";

/// Vertex AI does not know the project or its API is off.
pub const VERTEX_PROJECT: &str = "check that GOOGLE_CLOUD_PROJECT is the project id (not its \
    number) and that the Vertex AI API is enabled there (gcloud services enable \
    aiplatform.googleapis.com)";

/// The service account may not call Vertex AI.
pub const VERTEX_PERMISSION: &str =
    "grant the service account roles/aiplatform.user in GOOGLE_CLOUD_PROJECT";

/// No AWS credentials at all.
pub const AWS_CREDENTIALS: &str = "check that the broker has AWS credentials: on Lambda its \
    execution role; elsewhere AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a container role, or an \
    instance profile";

/// A response that is not what a Google API sends.
pub const NOT_GOOGLE: &str = "check that the configured endpoint is really a Google API";

/// Every hint, for the documentation check.
pub const ALL: &[&str] = &[
    PROVIDER,
    ATTRIBUTE_CONDITION,
    AWS_EXPIRED,
    AWS_SIGNATURE,
    AWS_IDENTITY,
    CONFIG,
    BINDING,
    LIFETIME,
    SCOPE,
    SERVICE_ACCOUNT,
    FEDERATED_TOKEN,
    VERTEX_PROJECT,
    VERTEX_PERMISSION,
    AWS_CREDENTIALS,
    NOT_GOOGLE,
];

/// The hint for a Google STS error code and description.
pub fn for_sts(code: &str, description: &str) -> &'static str {
    let mentions = |word: &str| description.contains(word);
    match code {
        "invalid_target" => PROVIDER,
        "unauthorized_client" if mentions("attribute condition") => ATTRIBUTE_CONDITION,
        "unauthorized_client" => AWS_IDENTITY,
        "invalid_grant" if mentions("ExpiredToken") => AWS_EXPIRED,
        "invalid_grant" if mentions("SignatureDoesNotMatch") => AWS_SIGNATURE,
        "invalid_grant" if mentions("attribute condition") => ATTRIBUTE_CONDITION,
        "invalid_grant" => AWS_IDENTITY,
        _ => CONFIG,
    }
}

/// The hint for an IAM Credentials `generateAccessToken` refusal.
pub fn for_impersonation(status: u16, message: &str) -> &'static str {
    let lowered = message.to_ascii_lowercase();
    match status {
        401 => FEDERATED_TOKEN,
        403 => BINDING,
        404 => SERVICE_ACCOUNT,
        400 if lowered.contains("lifetime") => LIFETIME,
        400 if lowered.contains("scope") => SCOPE,
        _ => BINDING,
    }
}

/// The hint for a Vertex AI refusal, where one applies.
pub fn for_vertex(status: u16) -> Option<&'static str> {
    match status {
        403 => Some(VERTEX_PERMISSION),
        404 => Some(VERTEX_PROJECT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_failures_map_to_their_setup_step() {
        let cases = [
            ("invalid_target", "The target service indicated by the \"audience\" parameters is invalid.", PROVIDER),
            ("unauthorized_client", "The given credential is rejected by the attribute condition.", ATTRIBUTE_CONDITION),
            ("invalid_grant", "Received invalid AWS response of type ExpiredToken with error message: The security token included in the request is expired", AWS_EXPIRED),
            ("invalid_grant", "Received invalid AWS response of type SignatureDoesNotMatch with error message: ...", AWS_SIGNATURE),
            ("invalid_grant", "Received invalid AWS response of type InvalidClientTokenId", AWS_IDENTITY),
            ("invalid_request", "Invalid value for \"subject_token_type\"", CONFIG),
        ];
        for (code, description, hint) in cases {
            assert_eq!(for_sts(code, description), hint, "{code}: {description}");
        }
    }

    #[test]
    fn impersonation_failures_map_to_their_setup_step() {
        let cases = [
            (
                403,
                "Permission 'iam.serviceAccounts.getAccessToken' denied",
                BINDING,
            ),
            (
                400,
                "Requested lifetime of 7200s exceeds the maximum",
                LIFETIME,
            ),
            (
                400,
                "Invalid OAuth scope or ID token audience provided.",
                SCOPE,
            ),
            (
                404,
                "Not found; Gaia id not found for email x@y",
                SERVICE_ACCOUNT,
            ),
            (
                401,
                "Request had invalid authentication credentials.",
                FEDERATED_TOKEN,
            ),
        ];
        for (status, message, hint) in cases {
            assert_eq!(
                for_impersonation(status, message),
                hint,
                "{status}: {message}"
            );
        }
    }

    #[test]
    fn readme_troubleshooting_lists_every_hint() {
        let readme = include_str!("../README.md");
        let flat: String = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        for hint in ALL {
            let hint: String = hint.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains(&hint),
                "README.md's troubleshooting lacks: {hint}"
            );
        }
    }
}
