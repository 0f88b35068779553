// Verify a Relay delivery in Java 17 (JDK only): Standard Webhooks v1 (HMAC-SHA256), whsec_ secret.
// usage: java Verify.java SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Base64;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class Verify {
    static boolean verify(String secret, String msgId, String timestamp, String signatureHeader,
                          byte[] body, long now) throws Exception {
        if (!timestamp.matches("[0-9]+") || Math.abs(now - Long.parseLong(timestamp)) > 300) {
            return false;
        }
        byte[] key = Base64.getDecoder().decode(secret.replaceFirst("^whsec_", ""));
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        mac.update((msgId + "." + timestamp + ".").getBytes(StandardCharsets.UTF_8));
        byte[] expected = mac.doFinal(body);
        for (String entry : signatureHeader.trim().split("\\s+")) {
            String[] parts = entry.split(",", 2);
            if (parts.length != 2) {
                return false;
            }
            if (!parts[0].equals("v1")) {
                continue;
            }
            try {
                if (MessageDigest.isEqual(Base64.getDecoder().decode(parts[1]), expected)) {
                    return true;
                }
            } catch (IllegalArgumentException badBase64) {
                // not a match; try the next entry
            }
        }
        return false;
    }

    public static void main(String[] args) throws Exception {
        long now = args.length > 5 ? Long.parseLong(args[5]) : System.currentTimeMillis() / 1000;
        boolean ok = verify(args[0], args[1], args[2], args[3], Files.readAllBytes(Path.of(args[4])), now);
        System.err.println(ok ? "valid" : "invalid");
        System.exit(ok ? 0 : 1);
    }
}
