package netlabtests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The test binary doubles as a gRPC client run inside a namespace (the
// identity scenario calls the coordinator with a chosen certificate and
// node name): NETLAB_HELPER=call.
func TestMain(m *testing.M) {
	switch os.Getenv("NETLAB_HELPER") {
	case "":
		code := m.Run()
		netlab.CleanupBuilds()
		os.Exit(code)
	case "call":
		os.Exit(call())
	case "gossipfake":
		os.Exit(gossipFake())
	case "trust":
		os.Exit(trustCall())
	default:
		fmt.Fprintln(os.Stderr, "unknown NETLAB_HELPER")
		os.Exit(2)
	}
}

// call makes one RPC (NETLAB_CALL=watch|report|renew) to NETLAB_ADDR as node
// NETLAB_NODE with the certificate NETLAB_CERT/NETLAB_KEY, and prints
// "OK ..." or "ERR <grpc code>: message".
func call() int {
	env := os.Getenv
	ca, err := os.ReadFile(env("NETLAB_CA"))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fmt.Println("SETUP bad CA")
		return 2
	}
	cert, err := tls.LoadX509KeyPair(env("NETLAB_CERT"), env("NETLAB_KEY"))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(env("NETLAB_ADDR"), grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	defer conn.Close()
	client := hivev1.NewCoordinatorServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node := env("NETLAB_NODE")
	switch env("NETLAB_CALL") {
	case "watch":
		stream, err := client.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: node})
		if err == nil {
			var msg *hivev1.WatchNodeStateResponse
			msg, err = stream.Recv()
			if err == nil {
				fmt.Printf("OK generation %d\n", msg.GetState().GetGeneration())
				return 0
			}
		}
		fmt.Printf("ERR %s: %s\n", status.Code(err), status.Convert(err).Message())
	case "report":
		_, err := client.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
			Node: node, Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1 << 40,
		}})
		if err == nil {
			fmt.Println("OK")
			return 0
		}
		fmt.Printf("ERR %s: %s\n", status.Code(err), status.Convert(err).Message())
	case "renew":
		csr, _, err := pki.CreateAgentCSR(node)
		if err == nil {
			if _, err = client.RenewCertificate(ctx, &hivev1.RenewCertificateRequest{Csr: csr}); err == nil {
				fmt.Println("OK")
				return 0
			}
		}
		fmt.Printf("ERR %s: %s\n", status.Code(err), status.Convert(err).Message())
	default:
		fmt.Println("SETUP unknown NETLAB_CALL")
		return 2
	}
	return 0
}
