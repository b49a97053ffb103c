// Package image holds hive's machine-image template (hive-agent.pkr.hcl,
// provision.sh) and the first-boot user data example (cloud-init.yaml). Its
// Go code is only tests: the template's structure checked with
// hashicorp/hcl, `packer validate` with Packer built from the Go module
// proxy, and the example user data checked against the agent's start rule.
package image
