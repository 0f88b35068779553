// Verify a Relay delivery in Go (standard library only): Standard Webhooks v1 (HMAC-SHA256) with
// a whsec_ secret, or v1a (Ed25519) with a whpk_ public key.
// usage: go run verify.go KEY WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
package main

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func verify(key, msgID, timestamp, signatureHeader string, body []byte, now float64) bool {
	if !regexp.MustCompile(`^[0-9]+$`).MatchString(timestamp) {
		return false
	}
	ts, _ := strconv.ParseFloat(timestamp, 64)
	if math.Abs(now-ts) > 300 {
		return false
	}
	signed := append([]byte(msgID+"."+timestamp+"."), body...)
	for _, entry := range strings.Fields(signatureHeader) {
		version, signature, found := strings.Cut(entry, ",")
		if !found {
			return false
		}
		given, err := base64.StdEncoding.DecodeString(signature)
		if err != nil {
			continue
		}
		if version == "v1" && strings.HasPrefix(key, "whsec_") {
			secret, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(key, "whsec_"))
			mac := hmac.New(sha256.New, secret)
			mac.Write(signed)
			if hmac.Equal(given, mac.Sum(nil)) {
				return true
			}
		}
		if version == "v1a" && strings.HasPrefix(key, "whpk_") {
			public, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(key, "whpk_"))
			if len(public) == ed25519.PublicKeySize && ed25519.Verify(public, signed, given) {
				return true
			}
		}
	}
	return false
}

func main() {
	body, err := os.ReadFile(os.Args[5])
	if err != nil {
		panic(err)
	}
	now := float64(time.Now().Unix())
	if len(os.Args) > 6 {
		now, _ = strconv.ParseFloat(os.Args[6], 64)
	}
	if verify(os.Args[1], os.Args[2], os.Args[3], os.Args[4], body, now) {
		fmt.Fprintln(os.Stderr, "valid")
		return
	}
	fmt.Fprintln(os.Stderr, "invalid")
	os.Exit(1)
}
