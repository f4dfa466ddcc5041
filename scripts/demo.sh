#!/usr/bin/env bash
# The main job of vpcnet, on a local VPC: tasks with their own ENIs, in
# different security groups, on two instances in two subnets, reaching each
# other by their VPC addresses where their groups allow it, never reaching
# instance metadata, always reaching their task metadata endpoint. Every
# check prints ok or FAIL; the script exits non-zero if any check failed.
# It leaves nothing behind: the local VPC is removed even on failure.
set -euo pipefail

BIN=${VPCNET_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/bin}
V="$BIN/vpcnet"
NAME=${VPCNET_DEMO_NAME:-vpcnet-demo}
# Served by the tasks, so not under /tmp: a task's /tmp is its own.
mkdir -p /var/cache/vpcnet-demo
WWW=$(mktemp -d /var/cache/vpcnet-demo/www.XXXXXX)
START=$(date +%s.%N)
source "$(dirname "$0")/demo-lib.sh"

cleanup() {
	local rc=$?
	section "Teardown"
	"$V" local down --name "$NAME" 2>&1 | sed 's/^/   /' || true
	rm -rf "$WWW"
	if ip netns list | grep -q "^$NAME-"; then
		printf '   %sFAIL%s  namespaces of %s are left\n' "$red" "$off" "$NAME"
		rc=1
	else
		say "nothing left: no namespace, link or rule of $NAME remains"
	fi
	exit "$rc"
}
trap cleanup EXIT

# The AWS CLI talks to the local VPC like to EC2 (--endpoint-url, because
# Debian's CLI v2 predates AWS_ENDPOINT_URL_EC2).
ec2() { aws --endpoint-url "$AWS_ENDPOINT_URL_EC2" --output text ec2 "$@"; }

section "1. A local VPC: EC2 API, instance metadata, routed datapath"
"$V" local down --name "$NAME" >/dev/null 2>&1 || true # what a crashed demo left
# Two subnets for the instances and tasks, two more (one per zone) for the
# pods' ENIs under custom networking.
"$V" local up --name "$NAME" \
	--subnets 10.0.0.0/20@us-east-1a,10.0.16.0/20@us-east-1b,10.0.32.0/20@us-east-1a,10.0.48.0/20@us-east-1b | sed 's/^/   /'
eval "$("$V" local env --name "$NAME")"
status=$("$V" local status --name "$NAME" -o json)
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" <<<"$status"; }
VPC=$(field 'd["vpcId"]')
SUBNET1=$(field 'd["subnets"][0]["id"]')
SUBNET2=$(field 'd["subnets"][1]["id"]')
PODS1=$(field 'd["subnets"][2]["id"]')
PODS2=$(field 'd["subnets"][3]["id"]')

section "2. Security groups, made with the AWS CLI"
WEB=$(ec2 create-security-group --vpc-id "$VPC" --group-name web --description "serves HTTP to the VPC" --query GroupId)
ec2 authorize-security-group-ingress --group-id "$WEB" --protocol tcp --port 8080 --cidr 10.0.0.0/16 >/dev/null
LOCKED=$(ec2 create-security-group --vpc-id "$VPC" --group-name locked --description "no inbound traffic" --query GroupId)
CLIENT=$(ec2 create-security-group --vpc-id "$VPC" --group-name client --description "outbound only" --query GroupId)
say "web    $WEB  inbound tcp/8080 from 10.0.0.0/16"
say "locked $LOCKED  no inbound rule"
say "client $CLIENT  no inbound rule (outbound to anywhere, as every new group)"

section "3. Three tasks, each with its own ENI"
echo "hello from the web task" >"$WWW/web.txt"
echo "hello from the locked task" >"$WWW/locked.txt"
run_task() { # NAME INSTANCE SUBNET GROUP COMMAND...
	local name=$1 inst=$2 subnet=$3 group=$4
	shift 4
	"$V" task run --local "$NAME" --instance "$inst" --subnet "$subnet" --security-group "$group" --name "$name" --detach -- "$@"
}
T_WEB=$(run_task web 1 "$SUBNET1" "$WEB" busybox httpd -f -p 8080 -h "$WWW")
T_LOCKED=$(run_task locked 1 "$SUBNET1" "$LOCKED" busybox httpd -f -p 8080 -h "$WWW")
T_CLIENT=$(run_task client 2 "$SUBNET2" "$CLIENT" sleep 600)
"$V" task ls | sed 's/^/   /'
addr() { "$V" task exec "$1" -- ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
WEB_IP=$(addr "$T_WEB")
LOCKED_IP=$(addr "$T_LOCKED")
CLIENT_IP=$(addr "$T_CLIENT")
say "web    on instance 1: $WEB_IP"
say "locked on instance 1: $LOCKED_IP"
say "client on instance 2: $CLIENT_IP"

section "4. What the VPC lets through"
get() { # TASK URL: an HTTP GET from inside a task (busybox wget, bounded by timeout)
	"$V" task exec "$1" -- timeout 3 busybox wget -q -O- "$2"
}
check "client (instance 2) -> web $WEB_IP:8080 across subnets: allowed by group web" \
	get "$T_CLIENT" "http://$WEB_IP:8080/web.txt"
check "client (instance 2) -> locked $LOCKED_IP:8080: dropped by group locked" \
	fails get "$T_CLIENT" "http://$LOCKED_IP:8080/locked.txt"
check "web -> locked on the same instance: dropped by group locked (ENIs, not the host, decide)" \
	fails get "$T_WEB" "http://$LOCKED_IP:8080/locked.txt"
for t in web:$T_WEB locked:$T_LOCKED client:$T_CLIENT; do
	n=${t%%:*} id=${t#*:}
	check "$n cannot reach instance metadata (169.254.169.254 blackholed)" \
		fails get "$id" "http://169.254.169.254/latest/meta-data/instance-id"
	check "$n reaches its task metadata endpoint (169.254.170.2) and sees its own ENI" \
		sh -c "\"$V\" task exec $id -- timeout 3 busybox wget -q -O- http://169.254.170.2/v4/ | grep -q '\"$(addr "$id")\"'"
done

section "5. The tasks' ENIs, as EC2 describes them"
aws --endpoint-url "$AWS_ENDPOINT_URL_EC2" --output table ec2 describe-network-interfaces \
	--filters Name=tag-key,Values=vpcnet:task-id \
	--query 'NetworkInterfaces[].{ENI:NetworkInterfaceId,Address:PrivateIpAddress,Status:Status,Instance:Attachment.InstanceId,Device:Attachment.DeviceIndex,Group:Groups[0].GroupName}' |
	sed 's/^/   /'

section "6. Stopping the tasks"
for id in "$T_WEB" "$T_LOCKED" "$T_CLIENT"; do
	"$V" task stop "$id"
done
left=$(ec2 describe-network-interfaces --filters Name=tag-key,Values=vpcnet:task-id --query 'length(NetworkInterfaces)')
check "every task ENI detached and deleted" test "$left" = 0

# The pods: the same harness as the end-to-end tests, as a program.
(cd "$(dirname "$0")/.." && PATH="$HOME/go/bin:/usr/local/go/bin:$PATH" go build -o "$BIN/demo-pods" ./test/demo/pods)
configs="{\"us-east-1a\":{\"subnet\":\"$PODS1\",\"securityGroups\":[\"$LOCKED\"]},\"us-east-1b\":{\"subnet\":\"$PODS2\",\"securityGroups\":[\"$WEB\"]}}"
if ! VPCNET_BIN_DIR="$BIN" "$BIN/demo-pods" --name "$NAME" --eni-configs "$configs" --locked "$LOCKED"; then
	failures=$((failures + 1))
fi

elapsed=$(python3 -c "import time; print(f'{time.time() - $START:.1f}')")
if [ "$failures" -eq 0 ]; then
	section "All checks passed in ${elapsed}s"
else
	section "$failures check(s) FAILED (${elapsed}s)"
	exit 1
fi
