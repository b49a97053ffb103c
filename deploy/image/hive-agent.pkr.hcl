# Packer template: an AWS AMI with hive-agent installed and enabled.
#
# The image carries no secret and no site detail: no join addresses, no
# labels, no certificate, no token. Each instance gets those at first boot
# from cloud-init (see cloud-init.yaml next to this file and
# docs/first-boot.md); until then the agent's start rule keeps it stopped.
#
#   make packages
#   packer init deploy/image
#   packer build -var agent_package=dist/hive-agent_1.2.3-1_amd64.deb deploy/image
#
# Checked offline by internal/image's tests: HCL structure with
# hashicorp/hcl, and `packer validate` with Packer v1.9.4 built from the Go
# module proxy.

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.1"
    }
  }
}

variable "agent_package" {
  type        = string
  description = "Path of the hive-agent .deb (os_family debian) or .rpm (os_family rhel) built by make packages."
}

variable "os_family" {
  type        = string
  default     = "debian"
  description = "debian (Debian 12 base AMI, .deb) or rhel (a RHEL-family base AMI, .rpm)."
  validation {
    condition     = contains(["debian", "rhel"], var.os_family)
    error_message = "The os_family must be debian or rhel."
  }
}

variable "arch" {
  type        = string
  default     = "amd64"
  description = "CPU architecture of the image: amd64 or arm64 (matches the package's)."
  validation {
    condition     = contains(["amd64", "arm64"], var.arch)
    error_message = "The arch must be amd64 or arm64."
  }
}

variable "region" {
  type    = string
  default = "eu-central-1"
}

variable "instance_type" {
  type        = string
  default     = ""
  description = "Build instance type; empty picks t3.small (amd64) or t4g.small (arm64)."
}

variable "source_ami_name" {
  type        = string
  default     = ""
  description = "Name filter of the base AMI; empty picks Debian 12 for os_family debian."
}

variable "source_ami_owners" {
  type        = list(string)
  default     = ["136693071363"] # Debian's official AWS account
  description = "Accounts that own the base AMI."
}

variable "ssh_username" {
  type    = string
  default = "admin" # Debian's cloud images; ec2-user on RHEL-family ones
}

variable "ami_name_prefix" {
  type    = string
  default = "hive-agent"
}

variable "hive_version" {
  type        = string
  default     = "dev"
  description = "hive version, for the AMI name and tags."
}

variable "volume_size" {
  type    = number
  default = 8
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "Extra regions the AMI is copied to."
}

locals {
  stamp         = formatdate("YYYYMMDDhhmmss", timestamp())
  aws_arch      = var.arch == "amd64" ? "x86_64" : "arm64"
  instance_type = var.instance_type != "" ? var.instance_type : (var.arch == "amd64" ? "t3.small" : "t4g.small")
  ami_filter    = var.source_ami_name != "" ? var.source_ami_name : "debian-12-${var.arch}-*"
  package_file  = "/tmp/${basename(var.agent_package)}"
}

source "amazon-ebs" "agent" {
  region        = var.region
  instance_type = local.instance_type
  ssh_username  = var.ssh_username
  ami_name      = "${var.ami_name_prefix}-${var.hive_version}-${var.os_family}-${var.arch}-${local.stamp}"
  ami_regions   = var.ami_regions

  source_ami_filter {
    filters = {
      name                = local.ami_filter
      architecture        = local.aws_arch
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = var.source_ami_owners
    most_recent = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.volume_size
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags = {
    Name           = "${var.ami_name_prefix}-${var.hive_version}"
    hive-component = "agent"
    hive-version   = var.hive_version
    os-family      = var.os_family
  }
  run_tags = {
    Name = "packer-${var.ami_name_prefix}"
  }
}

build {
  sources = ["source.amazon-ebs.agent"]

  provisioner "file" {
    source      = var.agent_package
    destination = local.package_file
  }

  provisioner "shell" {
    script           = "${path.root}/provision.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["HIVE_AGENT_PACKAGE=${local.package_file}", "HIVE_OS_FAMILY=${var.os_family}"]
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      hive_version = var.hive_version
      arch         = var.arch
    }
  }
}
