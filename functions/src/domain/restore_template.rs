//! Which restore templates ade-backup deploys.
//!
//! A restore-disks job writes an ARM template into the staging storage account the request named;
//! ade-backup deploys it under its own identity. Anyone who can write to that account could put
//! another template in its place, so only a template that does what a VM restore needs — and
//! nothing else — is deployed:
//! - a resource-group deployment template (`$schema` `…/deploymentTemplate.json#`);
//! - resources of three types only: the VM (exactly one), managed disks, network interfaces —
//!   no nested deployments, role assignments, VM extensions, scripts or any other type;
//! - every resource in the deployment's own resource group: no `scope`, `resourceGroup`,
//!   `subscriptionId`, no child `resources`;
//! - a VM without `customData`, `userData`, an extension profile, or a user-assigned identity;
//! - a network interface joins only the subnet the request named (a literal subnet id must be that
//!   one; an expression must be built from the template's parameters, which ade-backup fills).
//!
//! Types are compared case-insensitively, as ARM does.

use serde_json::{Map, Value};

pub const VIRTUAL_MACHINES: &str = "Microsoft.Compute/virtualMachines";
pub const DISKS: &str = "Microsoft.Compute/disks";
pub const NETWORK_INTERFACES: &str = "Microsoft.Network/networkInterfaces";
const ALLOWED_TYPES: [&str; 3] = [VIRTUAL_MACHINES, DISKS, NETWORK_INTERFACES];
const SCOPE_KEYS: [&str; 5] = [
    "scope",
    "resourceGroup",
    "subscriptionId",
    "managementGroup",
    "tenantId",
];
const MAX_RESOURCES: usize = 64;

/// Why a template is not deployed: where in it, and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct TemplateRejection {
    pub path: String,
    pub rule: String,
}

fn reject(path: impl Into<String>, rule: impl Into<String>) -> TemplateRejection {
    TemplateRejection {
        path: path.into(),
        rule: rule.into(),
    }
}

/// Checks a template against the rules above. `subnet` is the subnet id the request named, if any.
pub fn check(template: &Value, subnet: Option<&str>) -> Result<(), TemplateRejection> {
    let root = template
        .as_object()
        .ok_or_else(|| reject("$", "a template is a JSON object"))?;
    check_schema(root)?;
    let resources = resources(root)?;
    let mut vms = 0;
    for (path, r) in &resources {
        let kind = check_resource(path, r, subnet)?;
        vms += usize::from(kind.eq_ignore_ascii_case(VIRTUAL_MACHINES));
    }
    if vms != 1 {
        return Err(reject(
            "$.resources",
            format!("a restore template creates exactly one virtual machine, this one {vms}"),
        ));
    }
    Ok(())
}

/// Only resource-group deployment templates (other schemas deploy at other scopes).
fn check_schema(root: &Map<String, Value>) -> Result<(), TemplateRejection> {
    let schema = root.get("$schema").and_then(Value::as_str).unwrap_or("");
    let ok = schema
        .trim_end_matches('#')
        .to_ascii_lowercase()
        .ends_with("/deploymenttemplate.json");
    if ok {
        Ok(())
    } else {
        Err(reject(
            "$.$schema",
            format!("must be a resource-group deployment template schema, not {schema:?}"),
        ))
    }
}

/// A resource and its JSON path in the template.
type Located<'a> = (String, &'a Map<String, Value>);

/// The resources with their paths: an array, or (languageVersion 2.0) an object of symbolic names.
fn resources(root: &Map<String, Value>) -> Result<Vec<Located<'_>>, TemplateRejection> {
    let entries: Vec<(String, &Value)> = match root.get("resources") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("$.resources[{i}]"), r))
            .collect(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, r)| (format!("$.resources.{k}"), r))
            .collect(),
        _ => {
            return Err(reject(
                "$.resources",
                "must be an array or an object of resources",
            ))
        }
    };
    if entries.len() > MAX_RESOURCES {
        return Err(reject(
            "$.resources",
            format!("at most {MAX_RESOURCES} resources, got {}", entries.len()),
        ));
    }
    entries
        .into_iter()
        .map(|(path, r)| {
            r.as_object()
                .map(|o| (path.clone(), o))
                .ok_or_else(|| reject(path, "a resource is a JSON object"))
        })
        .collect()
}

/// Checks one resource; returns its type.
fn check_resource<'a>(
    path: &str,
    r: &'a Map<String, Value>,
    subnet: Option<&str>,
) -> Result<&'a str, TemplateRejection> {
    let kind = r.get("type").and_then(Value::as_str).unwrap_or("");
    if !ALLOWED_TYPES.iter().any(|t| t.eq_ignore_ascii_case(kind)) {
        return Err(reject(
            format!("{path}.type"),
            format!(
                "{kind:?} is not part of a VM restore (allowed: {})",
                ALLOWED_TYPES.join(", ")
            ),
        ));
    }
    if let Some(k) = SCOPE_KEYS.iter().find(|k| r.contains_key(**k)) {
        return Err(reject(
            format!("{path}.{k}"),
            "resources deploy into the target resource group only",
        ));
    }
    if r.contains_key("resources") {
        return Err(reject(
            format!("{path}.resources"),
            "child resources (e.g. VM extensions) are not part of a VM restore",
        ));
    }
    let props = r.get("properties").and_then(Value::as_object);
    if kind.eq_ignore_ascii_case(VIRTUAL_MACHINES) {
        check_vm(path, r, props)?;
    } else if kind.eq_ignore_ascii_case(NETWORK_INTERFACES) {
        check_nic(path, props, subnet)?;
    }
    Ok(kind)
}

/// No code runs on the restored VM and it gets no identity beyond its own.
fn check_vm(
    path: &str,
    r: &Map<String, Value>,
    props: Option<&Map<String, Value>>,
) -> Result<(), TemplateRejection> {
    let os_profile = props
        .and_then(|p| p.get("osProfile"))
        .and_then(Value::as_object);
    if os_profile.is_some_and(|o| o.contains_key("customData")) {
        let p = format!("{path}.properties.osProfile.customData");
        return Err(reject(p, "scripts are not part of a VM restore"));
    }
    for key in ["userData", "extensionProfile", "applicationProfile"] {
        if props.is_some_and(|p| p.contains_key(key)) {
            let p = format!("{path}.properties.{key}");
            return Err(reject(p, "code run on the VM is not part of a VM restore"));
        }
    }
    let identity = r
        .get("identity")
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("None");
    if identity.to_ascii_lowercase().contains("userassigned") {
        let p = format!("{path}.identity");
        return Err(reject(
            p,
            "user-assigned identities are not part of a VM restore",
        ));
    }
    Ok(())
}

/// A network interface joins the request's subnet, or one the template's parameters name.
fn check_nic(
    path: &str,
    props: Option<&Map<String, Value>>,
    subnet: Option<&str>,
) -> Result<(), TemplateRejection> {
    let configs = props
        .and_then(|p| p.get("ipConfigurations"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, c) in configs.iter().enumerate() {
        let id = c.pointer("/properties/subnet/id").and_then(Value::as_str);
        let Some(id) = id else { continue };
        let p = format!("{path}.properties.ipConfigurations[{i}].properties.subnet.id");
        if id.starts_with('[') {
            let lower = id.to_ascii_lowercase();
            if !lower.contains("parameters(") || lower.contains("/subscriptions/") {
                return Err(reject(
                    p,
                    "a subnet expression must be built from the template's parameters",
                ));
            }
        } else if !subnet.is_some_and(|s| s.eq_ignore_ascii_case(id)) {
            return Err(reject(
                p,
                format!("joins {id}, not the subnet the request named"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str =
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#";
    const SUBNET: &str = "/subscriptions/s/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/v/subnets/a";

    fn vm() -> Value {
        json!({"type": "Microsoft.Compute/virtualMachines", "apiVersion": "2024-07-01",
               "name": "[parameters('VirtualMachineName')]",
               "properties": {"storageProfile": {"osDisk": {"createOption": "Attach"}}}})
    }

    fn nic(subnet_id: &str) -> Value {
        json!({"type": "Microsoft.Network/networkInterfaces", "name": "nic",
               "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet_id}}}]}})
    }

    fn template(resources: Vec<Value>) -> Value {
        json!({"$schema": SCHEMA, "contentVersion": "1.0.0.0", "resources": resources})
    }

    fn rule_of(t: &Value) -> String {
        check(t, Some(SUBNET)).expect_err("rejected").to_string()
    }

    #[test]
    fn a_vm_restore_template_passes() {
        let disk = json!({"type": "microsoft.compute/disks", "name": "d1"});
        let param_subnet = "[resourceId(parameters('VirtualNetworkResourceGroup'), 'Microsoft.Network/virtualNetworks/subnets', parameters('VirtualNetwork'), parameters('Subnet'))]";
        let t = template(vec![vm(), disk, nic(param_subnet), nic(SUBNET)]);
        assert_eq!(check(&t, Some(SUBNET)), Ok(()));
        let symbolic =
            json!({"$schema": SCHEMA, "languageVersion": "2.0", "resources": {"vm": vm()}});
        assert_eq!(check(&symbolic, None), Ok(()));
    }

    #[test]
    fn other_resource_types_are_refused() {
        for kind in [
            "Microsoft.Resources/deployments",
            "Microsoft.Authorization/roleAssignments",
            "Microsoft.Compute/virtualMachines/extensions",
            "Microsoft.Resources/deploymentScripts",
            "[variables('t')]",
        ] {
            let t = template(vec![vm(), json!({"type": kind, "name": "x"})]);
            assert!(rule_of(&t).contains("not part of a VM restore"), "{kind}");
        }
    }

    #[test]
    fn other_scopes_and_child_resources_are_refused() {
        for key in ["scope", "resourceGroup", "subscriptionId"] {
            let mut r = vm();
            r[key] = json!("elsewhere");
            assert!(
                rule_of(&template(vec![r])).contains("target resource group only"),
                "{key}"
            );
        }
        let mut r = vm();
        r["resources"] = json!([{"type": "extensions", "name": "x"}]);
        assert!(rule_of(&template(vec![r])).contains("child resources"));
        let sub = json!({"$schema": "https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentTemplate.json#", "resources": [vm()]});
        assert!(rule_of(&sub).contains("$schema"));
    }

    #[test]
    fn code_and_identities_on_the_vm_are_refused() {
        let mut r = vm();
        r["properties"]["osProfile"] = json!({"customData": "IyEvYmluL3NoCg=="});
        assert!(rule_of(&template(vec![r])).contains("customData"));
        let mut r = vm();
        r["properties"]["userData"] = json!("x");
        assert!(rule_of(&template(vec![r])).contains("userData"));
        let mut r = vm();
        r["identity"] = json!({"type": "SystemAssigned, UserAssigned"});
        assert!(rule_of(&template(vec![r])).contains("identity"));
    }

    #[test]
    fn exactly_one_vm_and_only_the_named_subnet() {
        assert!(rule_of(&template(vec![])).contains("exactly one virtual machine"));
        assert!(rule_of(&template(vec![vm(), vm()])).contains("exactly one virtual machine"));
        let other = "/subscriptions/s/resourceGroups/rg-x/providers/Microsoft.Network/virtualNetworks/v/subnets/b";
        assert!(
            rule_of(&template(vec![vm(), nic(other)])).contains("not the subnet the request named")
        );
        let hard = "[concat('/subscriptions/s/resourceGroups/rg-x/providers/Microsoft.Network/virtualNetworks/v/subnets/', parameters('Subnet'))]";
        assert!(rule_of(&template(vec![vm(), nic(hard)])).contains("parameters"));
        assert!(
            check(&template(vec![vm(), nic(SUBNET)]), None).is_err(),
            "no subnet named"
        );
    }
}
