//! The gateway NodePorts of a kind cluster are the model's: a gateway Service port
//! the fixtures give no `nodePort` gets, in the manifest applied, the one the model
//! chose ([`crate::istio::Mesh`]'s ingress Services, the lowest free port of the
//! range), so that the API server does not allocate another at random and the
//! cluster's `extraPortMappings`, written from the model before the cluster exists,
//! publish the port the gateway is really on.

use crate::fixtures::Fixtures;
use crate::istio::Mesh;
use serde_json::Value;

/// `fx` with the model's NodePort written into every gateway Service port that has
/// none (the applied object and the typed view alike); fixed ones are kept.
pub fn with_model_node_ports(fx: &Fixtures, mesh: &Mesh) -> Fixtures {
    let mut out = fx.clone();
    for s in &mesh.ingress_services {
        let chosen = |port: u64| {
            s.ports
                .iter()
                .find(|(sp, _, _)| u64::from(*sp) == port)
                .map(|(_, np, _)| *np)
        };
        for o in out
            .objects
            .iter_mut()
            .filter(|o| o.kind == "Service" && o.namespace == s.namespace && o.name == s.name)
        {
            let ports = o
                .raw
                .pointer_mut("/spec/ports")
                .and_then(Value::as_array_mut);
            for p in ports.into_iter().flatten() {
                let fixed = p.get("nodePort").is_some_and(|v| !v.is_null());
                let np = p.get("port").and_then(Value::as_u64).and_then(chosen);
                if let (false, Some(np)) = (fixed, np) {
                    p["nodePort"] = Value::from(np);
                }
            }
        }
        for typed in out
            .services
            .iter_mut()
            .filter(|t| t.namespace == s.namespace && t.name == s.name)
        {
            for p in typed
                .spec
                .spec
                .ports
                .iter_mut()
                .filter(|p| p.node_port.is_none())
            {
                p.node_port = chosen(u64::from(p.port));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway Service port without a nodePort gets the model's; a fixed one and
    /// the other Services are left alone.
    #[test]
    fn the_model_node_port_is_written_into_the_gateway_service() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(root.join("fixtures/ingress")).unwrap() {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            std::fs::write(
                dir.path().join(e.file_name()),
                text.replace("    nodePort: 30080\n", ""),
            )
            .unwrap();
        }
        let fx = crate::fixtures::load_dir(dir.path()).unwrap();
        let mesh = Mesh::build(&fx);
        let gw = &mesh.ingress_services[0];
        let (_, np, _) = gw.ports[0];
        let raw_ports = |fx: &Fixtures| {
            fx.objects
                .iter()
                .find(|o| o.kind == "Service" && o.name == gw.name && o.namespace == gw.namespace)
                .unwrap()
                .raw["spec"]["ports"]
                .clone()
        };
        assert!(raw_ports(&fx)[0].get("nodePort").is_none());
        let fixed = with_model_node_ports(&fx, &mesh);
        assert_eq!(raw_ports(&fixed)[0]["nodePort"], Value::from(np));
        // Every gateway Service port now has one, the model's.
        for (i, (sp, np, _)) in gw.ports.iter().enumerate() {
            assert_eq!(raw_ports(&fixed)[i]["port"], Value::from(*sp));
            assert_eq!(raw_ports(&fixed)[i]["nodePort"], Value::from(*np));
        }
        // Nothing else changed.
        let others = |fx: &Fixtures| {
            fx.objects
                .iter()
                .filter(|o| !(o.kind == "Service" && o.name == gw.name))
                .map(|o| o.raw.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(others(&fixed), others(&fx));
        // The fixtures as shipped (nodePort 30080) are left as they are.
        let shipped = crate::fixtures::load_dir(&root.join("fixtures/ingress")).unwrap();
        let again = with_model_node_ports(&shipped, &Mesh::build(&shipped));
        let raw = |fx: &Fixtures| fx.objects.iter().map(|o| o.raw.clone()).collect::<Vec<_>>();
        assert_eq!(raw(&again), raw(&shipped));
    }
}
