use super::*;
use serde_json::json;

const SUB: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg-drill")
}

fn target() -> DrillTarget {
    DrillTarget {
        resource_group: rg(),
        subscription: SUB.into(),
        resource_group_name: "rg-drill".into(),
        subnet_id: ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/v/subnets/s")).expect("subnet"),
        staging_storage_account_id: ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/st")).expect("sa"),
    }
}

fn template() -> Value {
    json!({"resources": [
        {"type": "Microsoft.Compute/virtualMachines", "name": "vm",
         "tags": {"owner": "x", "ADE-BACKUP-DRILL": "drill-forged"},
         "properties": {"storageProfile": {
            "osDisk": {"managedDisk": {"id": format!("{}/providers/Microsoft.Compute/disks/os-1", rg())}},
            "dataDisks": [
                {"managedDisk": {"id": "[resourceId('Microsoft.Compute/disks', 'data-0')]"}},
                {"managedDisk": {"id": format!("/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/disks/prod")}},
                {"managedDisk": {"id": "[concat('a', 'b')]"}},
                {"managedDisk": {"id": "[resourceId('Microsoft.Compute/disks', '../x')]"}}
            ]}}},
        {"type": "Microsoft.Network/networkInterfaces", "name": "nic", "tags": "[parameters('t')]"}
    ]})
}

#[test]
fn a_drill_template_tags_every_resource_with_this_drill_only() {
    let mut t = template();
    tag_template(&mut t, Some("drill-1"));
    assert_eq!(
        t["resources"][0]["tags"],
        json!({"owner": "x", "ade-backup-drill": "drill-1"})
    );
    assert_eq!(
        t["resources"][1]["tags"],
        json!({"ade-backup-drill": "drill-1"})
    );
}

#[test]
fn a_real_restore_template_never_carries_the_drill_tag() {
    let mut t = template();
    tag_template(&mut t, None);
    assert_eq!(t["resources"][0]["tags"], json!({"owner": "x"}));
    assert!(t["resources"][1].get("tags").is_none());
}

#[test]
fn the_restored_disks_are_the_template_s_disks_inside_the_group_only() {
    let ids = template_disk_ids(&template(), &rg());
    assert_eq!(
        ids,
        vec![
            format!("{}/providers/Microsoft.Compute/disks/os-1", rg()),
            format!("{}/providers/Microsoft.Compute/disks/data-0", rg()),
        ]
    );
}

#[test]
fn only_a_resource_tagged_with_this_drill_inside_the_group_may_be_deleted() {
    let id = |rg: &str| {
        ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/d"
        ))
        .expect("id")
    };
    let tagged = |v: &str| TaggedResource {
        tags: [(DRILL_TAG.to_string(), v.to_string())].into(),
        ..Default::default()
    };
    assert!(may_delete(&target(), "drill-1", &id("rg-drill"), &tagged("drill-1")).is_ok());
    let other = may_delete(&target(), "drill-1", &id("rg-drill"), &tagged("drill-2"));
    assert!(other.is_err_and(|e| e.contains("another drill")));
    let none = may_delete(
        &target(),
        "drill-1",
        &id("rg-drill"),
        &TaggedResource::default(),
    );
    assert!(none.is_err_and(|e| e.contains("no ade-backup-drill tag")));
    assert!(may_delete(&target(), "drill-1", &id("rg-app"), &tagged("drill-1")).is_err());
    assert!(may_delete(&target(), "drill-1", &id("rg-drill"), &tagged("DRILL-1")).is_err());
}

#[test]
fn the_drill_tag_is_merged_into_existing_tags() {
    let existing: BTreeMap<String, String> = [
        ("env".to_string(), "x".to_string()),
        ("Ade-Backup-Drill".to_string(), "old".to_string()),
    ]
    .into();
    let t = with_drill_tag(&existing, "drill-1");
    assert_eq!(t.len(), 2);
    assert_eq!(t.get(DRILL_TAG).map(String::as_str), Some("drill-1"));
}
