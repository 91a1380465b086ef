#!/usr/bin/env bash
# Validates infra/ without a Bicep compiler: the schema/scope/roles validator with its negative
# cases (infra/tests/validate_infra.py --self-test), then checkov's Bicep checks (each skip is
# justified inline in the .bicep files). Tools are pinned and installed into a venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

PYCEP_VERSION=0.5.1  # the version checkov 3.3.30 pins
CHECKOV_VERSION=3.3.30
CFN_LINT_VERSION=1.58.0  # the AWS Lambda build's CloudFormation template (infra/aws/)
venv="${CARGO_TARGET_DIR:-target}/infra-venv"
if ! "$venv/bin/python" -c "import pycep, checkov" 2>/dev/null; then
  echo "== installing pycep-parser $PYCEP_VERSION and checkov $CHECKOV_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "pycep-parser==$PYCEP_VERSION" "checkov==$CHECKOV_VERSION"
fi
if [ "$("$venv/bin/cfn-lint" --version 2>/dev/null)" != "cfn-lint $CFN_LINT_VERSION" ]; then
  echo "== installing cfn-lint $CFN_LINT_VERSION into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
fi
echo "== infra: schema, scope and role checks (with negative cases)"
"$venv/bin/python" infra/tests/validate_infra.py --self-test
echo "== infra: checkov --framework bicep"
"$venv/bin/checkov" --framework bicep -d infra --compact --quiet --skip-download
echo "== infra: cfn-lint infra/aws/template.yaml (AWS Lambda build)"
"$venv/bin/cfn-lint" infra/aws/template.yaml
